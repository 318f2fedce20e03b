#[farcall::remote]
trait Api {
    type Item;
    async fn ping(&self);
}

fn main() {}
