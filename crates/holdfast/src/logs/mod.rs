//! SKELETON: replaced by the logs helper.
