//! SKELETON: replaced by the process helper.
