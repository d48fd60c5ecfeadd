//! bin placeholder
fn main() {}
