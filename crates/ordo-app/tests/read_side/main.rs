//! The read side on read stores kept in memory (what is tested is the read side, not a
//! database): the projection, the blue-green rebuild and its switch, the bulk load at
//! start, pipelined commits, and the replay jobs.

mod bulk_load;
mod bulk_start;
mod rebuild;
mod shards;
mod support;
mod switch;
