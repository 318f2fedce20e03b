#[farcall::remote]
pub trait Dir {
    async fn count(&self) -> u64;
    async fn open(&self, name: String) -> DirClient;
}

async fn demo(root: DirClient) {
    // A promise of a plain value has no client methods: `.await` it first.
    let _ = root.count().open("lib".into());
}

fn main() {
    drop(demo);
}
