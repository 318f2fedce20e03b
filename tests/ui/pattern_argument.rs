#[farcall::remote]
trait Api {
    async fn add(&self, (a, b): (u32, u32)) -> u32 {
        a + b
    }
}

fn main() {}
