//! The small interface every bench calls: `add(u64, u64) -> u64`.

#[farcall::remote]
pub trait Adder {
    async fn add(&self, a: u64, b: u64) -> u64;
}

/// The served implementation.
pub struct Add;

impl Adder for Add {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}
