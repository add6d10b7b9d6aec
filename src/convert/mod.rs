//! `c2vm convert` and `c2vm build`: the options (`options`), their checked form (`plan`), which
//! kernel and init (`choose`), what the disk is made from (`input`), the steps after the source
//! (`assemble`), the report (`report`), and `pipeline`, which calls them in order.
pub mod assemble;
pub mod choose;
pub mod input;
pub mod options;
pub mod pipeline;
pub mod plan;
pub mod report;
