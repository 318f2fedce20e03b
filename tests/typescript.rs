//! TypeScript declarations generated from traits (feature `typescript`): the
//! mapping of each kind of type, and the committed declarations of the Cap'n Web
//! test server's `Api` (`tests/js/api.d.ts`, type-checked by `npm run typecheck`).

use std::collections::BTreeMap;
use std::process::Command;

use bytes::Bytes;
use farcall::capnweb::typescript::{self, Declarations, TypeScript, TypeScriptInterface};
use farcall::{ByteStream, ByteWriter, Callback, Stream, StreamSender};
use serde::{Deserialize, Serialize};

/// A shape with a kind.
#[derive(Serialize, Deserialize, ts_rs::TS)]
#[serde(tag = "kind")]
pub enum Shape {
    Circle { radius: f64 },
    Square { side: f64, id: u64 },
}

/// Streams and writers inside a struct.
#[derive(Serialize, Deserialize, ts_rs::TS)]
pub struct Feed {
    pub name: String,
    pub items: Stream<u32>,
    pub out: StreamSender<String>,
    pub data: ByteStream,
    pub sink: ByteWriter,
}

typescript::from_ts_rs!(Shape, Feed);

/// A type without TypeScript declarations.
#[derive(Serialize, Deserialize)]
pub struct Opaque(u8);

#[farcall::remote]
pub trait Kinds {
    async fn scalars(&self, a: bool, b: char, c: u32, d: i64, e: f32) -> u128;
    async fn containers(
        &self,
        list: Vec<Option<String>>,
        map: BTreeMap<String, Vec<u8>>,
        pair: (u8, String),
        data: Bytes,
    ) -> Option<Vec<Bytes>>;
    async fn callbacks(&self, two: Callback<(u8, String), bool>, none: Callback<()>) -> u8;
    async fn shapes(&self, shapes: Vec<Shape>) -> Result<Shape, String>;
    async fn other(&self) -> OtherClient;
    async fn streams(
        &self,
        a: Stream<u8>,
        b: StreamSender<u8>,
        c: ByteStream,
        d: ByteWriter,
        feed: Feed,
    ) -> Stream<String>;
    #[farcall(oneway)]
    async fn tell(&self, text: String, extra: Option<u8>);
}

/// Names a type with no declaration: described without methods when another
/// trait names it, and not `TypeScriptInterface` itself.
#[farcall::remote]
pub trait Other {
    async fn opaque(&self, o: Opaque);
}

#[test]
fn every_kind_of_type_is_written_as_the_codec_sends_it() {
    let ts = typescript::declarations::<KindsClient>();
    for line in [
        "import type { RpcTarget } from \"capnweb\";",
        "export interface Kinds extends RpcTarget {",
        "  scalars(a: boolean, b: string, c: number, d: number | bigint, e: number): Promise<number | bigint>;",
        "  containers(list: Array<string | null>, map: Record<string, Array<number>>, pair: [number, string], data: Uint8Array): Promise<Array<Uint8Array> | null>;",
        "  callbacks(two: (arg0: number, arg1: string) => boolean | Promise<boolean>, none: () => void | Promise<void>): Promise<number>;",
        "  shapes(shapes: Array<Shape>): Promise<Shape>;",
        "   * Rejects with an `Error` carrying the text of the Rust error.",
        "  other(): Promise<Other>;",
        "  streams(a: ReadableStream<number>, b: WritableStream<number>, c: ReadableStream<Uint8Array>, d: WritableStream<Uint8Array>, feed: Feed): Promise<ReadableStream<string>>;",
        "export type Feed = { name: string, items: ReadableStream<number>, out: WritableStream<string>, data: ReadableStream<Uint8Array>, sink: WritableStream<Uint8Array>, };",
        "  tell(text: string, extra?: number | null): Promise<void>;",
        "export type Shape = { \"kind\": \"Circle\", radius: number, } | { \"kind\": \"Square\", side: number, id: number | bigint, };",
        " * Methods not described: a type this trait names has no TypeScript declaration.",
        "export interface Other extends RpcTarget {",
    ] {
        assert!(ts.contains(line), "missing `{line}` in:\n{ts}");
    }
    // Each declaration once.
    assert_eq!(ts.matches("export type Shape").count(), 1, "{ts}");
}

/// `OtherClient` is not `TypeScriptInterface`: `declarations::<OtherClient>()`
/// does not compile, and a probe says so at run time.
#[test]
#[allow(clippy::needless_borrow)] // the probe picks its method by autoref
fn a_trait_naming_an_undeclared_type_has_no_interface() {
    trait Probe {
        fn described(&self) -> bool;
    }
    impl<T: TypeScriptInterface> Probe for &std::marker::PhantomData<T> {
        fn described(&self) -> bool {
            true
        }
    }
    impl<T> Probe for std::marker::PhantomData<T> {
        fn described(&self) -> bool {
            false
        }
    }
    assert!((&&std::marker::PhantomData::<KindsClient>).described());
    assert!(!(&&std::marker::PhantomData::<OtherClient>).described());
    let mut decls = Declarations::new();
    assert_eq!(OtherClient::typescript(&mut decls), "Other");
}

#[test]
fn the_test_servers_declarations_are_committed() {
    let out = Command::new(env!("CARGO_BIN_EXE_farcall-capnweb-test-server"))
        .arg("--typescript")
        .output()
        .expect("the test server runs");
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).expect("UTF-8");
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/api.d.ts");
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if generated != committed {
        if std::env::var_os("FARCALL_BLESS").is_some() {
            std::fs::write(path, &generated).expect("write api.d.ts");
        } else {
            panic!(
                "tests/js/api.d.ts is not what farcall generates for the test server's Api; \
                 run `FARCALL_BLESS=1 cargo test --test typescript` and commit it"
            );
        }
    }
}
