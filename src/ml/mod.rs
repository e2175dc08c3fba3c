//! The ML core on candle: the Llama model, our AdamW, learning-rate schedules, the tokenizer,
//! token shards and the training loop. Knows nothing of workflows,
//! stores or the scheduler; stage kinds in `stages` are built on it.

pub mod chat;
pub mod cores;
pub mod device;
pub mod fused;
pub mod generate;
pub mod grow;
pub mod merge;
pub mod model;
pub mod ops;
pub mod optim;
pub mod schedule;
pub mod shards;
pub mod tokenizer;
pub mod train;
