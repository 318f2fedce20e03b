#[farcall::remote]
pub trait Dir {
    async fn count(&self) -> u64;
    async fn open(&self, name: String) -> DirClient;
}

async fn demo(root: DirClient) {
    // Only a call returning a client type can be pipelined on.
    let _ = root.count().pipelined();
}

fn main() {
    drop(demo);
}
