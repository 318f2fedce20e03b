#[farcall::remote]
unsafe trait Api {
    async fn ping(&self);
}

fn main() {}
