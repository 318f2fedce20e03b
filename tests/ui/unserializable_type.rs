struct Point {
    x: i32,
    y: i32,
}

#[farcall::remote]
trait Plot {
    async fn plot(&self, at: Point);
}

fn main() {}
