#[farcall::remote]
trait Api {
    async fn finish(self);
}

fn main() {}
