#[farcall::remote]
trait Api<T> {
    async fn ping(&self);
}

fn main() {}
