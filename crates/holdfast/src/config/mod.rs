//! SKELETON: replaced by the config helper.
