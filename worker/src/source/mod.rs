//! Sources of records for local runs: JSON-lines files, standard input and the generator.
//! (Kafka sources live with the Kafka worker.)

pub mod generator;
pub mod lines;
