#[farcall::remote]
trait Api {
    async fn put<T>(&self, value: u32);
}

fn main() {}
