//! TypeScript declarations for the JavaScript side of a Cap'n Web session, made
//! from a `#[farcall::remote]` trait, so a front end type-checks its calls. Feature
//! `typescript`.
//!
//! Each trait becomes an interface extending `capnweb`'s `RpcTarget`, with a method
//! per trait method: its arguments, and a `Promise` of its value. Pass the root's
//! interface to the session (`newWebSocketRpcSession<Api>(url)`) and `capnweb`'s own
//! types make every call, callback and pipelined chain checked:
//!
//! ```
//! use farcall::capnweb::typescript;
//!
//! /// A point on the plane.
//! #[derive(serde::Serialize, serde::Deserialize, ts_rs::TS)]
//! pub struct Point {
//!     pub x: f64,
//!     pub y: f64,
//! }
//! // User types are described by ts-rs; this line lets traits name them.
//! typescript::from_ts_rs!(Point);
//!
//! #[farcall::remote]
//! pub trait Shapes {
//!     async fn centre(&self, points: Vec<Point>) -> Option<Point>;
//!     async fn watch(&self, on_move: farcall::Callback<Point>) -> u64;
//! }
//!
//! let ts = typescript::declarations::<ShapesClient>();
//! assert!(ts.contains("export interface Shapes extends RpcTarget {"));
//! assert!(ts.contains("centre(points: Array<Point>): Promise<Point | null>;"));
//! assert!(ts.contains("watch(on_move: (arg: Point) => void | Promise<void>): Promise<number | bigint>;"));
//! assert!(ts.contains("export type Point = { x: number, y: number, };"));
//! // typescript::write::<ShapesClient>("src/shapes.d.ts")?;
//! ```
//!
//! # Types
//!
//! Types are written as the Cap'n Web codec sends them: `String` and `char` as
//! `string`, `bool` as `boolean`, floats and integers up to 32 bits as `number`, wider
//! integers as `number | bigint` (a value beyond 2^53 arrives as a `bigint`), `Bytes`
//! as `Uint8Array`, `Option<T>` as `T | null`, sequences and sets as `Array<T>`, maps
//! as `Record<string, V>` (JSON object keys are text), tuples as tuples, `()` as
//! `undefined`, a [`Callback<A, R>`](crate::Callback) as a function (a tuple `A`
//! is its argument list) that may return `R` or a promise of it, a
//! [`Stream<T>`](crate::Stream) as `ReadableStream<T>`, a
//! [`StreamSender<T>`](crate::StreamSender) as `WritableStream<T>`, a
//! [`ByteWriter`](crate::ByteWriter) as `WritableStream<Uint8Array>`, a
//! [`ByteStream`](crate::ByteStream) as `ReadableStream<Uint8Array>`, and a client
//! type as its trait's interface. A method returning `Result<T, E>` returns `Promise<T>`,
//! which rejects with an `Error` carrying the error's text. Trailing `Option`
//! arguments may be left out.
//!
//! Types of your own (structs, enums) derive [`ts_rs::TS`] and are named with
//! [`from_ts_rs!`]: the trait's declarations then name them and include their
//! declarations (and those of the types they contain). ts-rs is configured to write
//! wide integers as above; a field of type `Bytes` needs
//! `#[ts(type = "Uint8Array")]`. A type implementing neither is reported when its
//! trait's declarations are asked for, not before: enabling the feature costs other
//! traits nothing.
//!
//! Why ts-rs: it is the most used and maintained crate deriving TypeScript from Rust
//! types, stable (where specta 2 is still a release candidate), follows serde's
//! attributes (`rename`, `tag`, `skip`...), and lets the wide-integer type be set.

use std::fmt::Write as _;
use std::io;
use std::path::Path;

pub use ts_rs;

/// A Rust type as TypeScript describes it on a Cap'n Web session. Implemented for
/// the standard types that travel, `Bytes`, [`Callback`](crate::Callback), every
/// generated client, and (by [`from_ts_rs!`]) types deriving [`ts_rs::TS`].
pub trait TypeScript {
    /// The type as a TypeScript type expression. Declares in `decls` every named
    /// type the expression mentions.
    fn typescript(decls: &mut Declarations) -> String;

    /// Whether a value may be left out as a trailing argument (true for `Option`).
    const OPTIONAL: bool = false;

    /// The types of the arguments, when a value of this type is a whole argument
    /// list (a tuple as the argument of a `Callback`).
    fn parameters(decls: &mut Declarations) -> Option<Vec<String>> {
        let _ = decls;
        None
    }
}

/// The declarations of a TypeScript file: interfaces of traits, and the types they
/// name, each once.
pub struct Declarations {
    config: ts_rs::Config,
    /// The names declared so far.
    names: Vec<String>,
    /// Their declarations, in the same order (an interface's is written once its
    /// methods are known, so it may name itself).
    items: Vec<String>,
}

impl Default for Declarations {
    fn default() -> Self {
        Declarations {
            config: ts_rs::Config::new().with_large_int(WIDE_INTEGER),
            names: Vec::new(),
            items: Vec::new(),
        }
    }
}

/// How integers beyond 32 bits arrive: numbers, or `bigint`s past 2^53.
const WIDE_INTEGER: &str = "number | bigint";

/// A method of an interface, for [`Declarations::interface`].
#[doc(hidden)]
pub struct MethodDecl {
    pub name: &'static str,
    pub doc: &'static str,
    /// Names and types of the arguments; whether each may be left out.
    pub args: Vec<(&'static str, String, bool)>,
    /// The value's type (`None` for nothing), and whether the method returns `Result`.
    pub returns: Option<String>,
    pub fallible: bool,
}

impl Declarations {
    /// No declarations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `T`'s declarations (for a client: its trait's interface and every type
    /// it names).
    pub fn add<T: TypeScript + ?Sized>(&mut self) -> &mut Self {
        T::typescript(self);
        self
    }

    /// The ts-rs settings used for types deriving [`ts_rs::TS`].
    pub fn config(&self) -> &ts_rs::Config {
        &self.config
    }

    /// The text of a `.d.ts` file holding every declaration added.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "// TypeScript declarations for a Cap'n Web session with a farcall server.\n\
             // Generated from Rust by farcall: do not edit.\n\n\
             import type { RpcTarget } from \"capnweb\";\n",
        );
        for item in &self.items {
            out.push('\n');
            out.push_str(item);
            out.push('\n');
        }
        out
    }

    /// Writes [`render`](Self::render) to `path`.
    pub fn write(&self, path: impl AsRef<Path>) -> io::Result<()> {
        std::fs::write(path, self.render())
    }

    /// Reserves `name`; false when it was declared already.
    fn reserve(&mut self, name: &str) -> Option<usize> {
        if self.names.iter().any(|n| n == name) {
            return None;
        }
        self.names.push(name.to_owned());
        self.items.push(String::new());
        Some(self.items.len() - 1)
    }

    /// Declares the interface of a trait (once) and returns its name. Used by
    /// generated clients.
    #[doc(hidden)]
    pub fn interface(
        &mut self,
        name: &'static str,
        doc: &'static str,
        methods: impl FnOnce(&mut Self) -> Vec<MethodDecl>,
    ) -> String {
        let Some(slot) = self.reserve(name) else {
            return name.to_owned();
        };
        let methods = methods(self);
        let mut out = js_doc(doc, "");
        let _ = writeln!(out, "export interface {name} extends RpcTarget {{");
        for m in methods {
            let mut doc = m.doc.to_owned();
            if m.fallible {
                if !doc.is_empty() {
                    doc.push_str("\n\n");
                }
                doc.push_str("Rejects with an `Error` carrying the text of the Rust error.");
            }
            out.push_str(&js_doc(&doc, "  "));
            // Only trailing optional arguments may be left out.
            let required = m.args.iter().rposition(|a| !a.2).map_or(0, |i| i + 1);
            let args: Vec<String> = m
                .args
                .iter()
                .enumerate()
                .map(|(i, (arg, ty, _))| {
                    let mark = if i >= required { "?" } else { "" };
                    format!("{arg}{mark}: {ty}")
                })
                .collect();
            let value = m.returns.as_deref().unwrap_or("void");
            let _ = writeln!(out, "  {}({}): Promise<{value}>;", m.name, args.join(", "));
        }
        out.push('}');
        self.items[slot] = out;
        name.to_owned()
    }

    /// Names a type deriving [`ts_rs::TS`], declaring it and the types it contains.
    /// Used by [`from_ts_rs!`].
    #[doc(hidden)]
    pub fn ts_rs<T: ts_rs::TS + 'static + ?Sized>(&mut self) -> String {
        self.declare_ts_rs::<T>();
        T::visit_dependencies(&mut Visitor(self));
        T::name(&self.config)
    }

    fn declare_ts_rs<T: ts_rs::TS + ?Sized>(&mut self) {
        if T::output_path().is_none() {
            // Not a declared type (a standard one).
            return;
        }
        let Some(slot) = self.reserve(&T::ident(&self.config)) else {
            return;
        };
        let mut out = T::docs().unwrap_or_default();
        out.push_str("export ");
        out.push_str(&T::decl(&self.config));
        self.items[slot] = out;
    }
}

/// Walks the types a ts-rs type contains, declaring each.
struct Visitor<'a>(&'a mut Declarations);

impl ts_rs::TypeVisitor for Visitor<'_> {
    fn visit<T: ts_rs::TS + 'static + ?Sized>(&mut self) {
        let known = T::output_path().is_some() && self.0.names.contains(&T::ident(&self.0.config));
        if known {
            return;
        }
        self.0.declare_ts_rs::<T>();
        T::visit_dependencies(self);
    }
}

/// `text` as a JSDoc comment indented by `indent`, or nothing for no text.
fn js_doc(text: &str, indent: &str) -> String {
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut out = format!("{indent}/**\n");
    for line in text.lines() {
        let line = line.replace("*/", "*\\/");
        if line.is_empty() {
            let _ = writeln!(out, "{indent} *");
        } else {
            let _ = writeln!(out, "{indent} * {line}");
        }
    }
    let _ = writeln!(out, "{indent} */");
    out
}

/// The declarations for `T` (a generated client: its trait's interface and every
/// type it names), as the text of a `.d.ts` file.
pub fn declarations<T: TypeScriptInterface + ?Sized>() -> String {
    Declarations::new().add::<T>().render()
}

/// Writes [`declarations`] for `T` to `path`.
pub fn write<T: TypeScriptInterface + ?Sized>(path: impl AsRef<Path>) -> io::Result<()> {
    Declarations::new().add::<T>().write(path)
}

/// Implements [`TypeScript`] for types deriving [`ts_rs::TS`], so traits can name
/// them: `from_ts_rs!(Point, Shape<f64>);`.
#[macro_export]
macro_rules! __typescript_from_ts_rs {
    ($($ty:ty),* $(,)?) => {$(
        impl $crate::capnweb::typescript::TypeScript for $ty {
            fn typescript(
                decls: &mut $crate::capnweb::typescript::Declarations,
            ) -> ::std::string::String {
                decls.ts_rs::<Self>()
            }
            const OPTIONAL: bool = <Self as $crate::capnweb::typescript::ts_rs::TS>::IS_OPTION;
        }
    )*};
}

#[doc(inline)]
pub use crate::__typescript_from_ts_rs as from_ts_rs;

macro_rules! named {
    ($($ty:ty => $ts:expr),* $(,)?) => {$(
        impl TypeScript for $ty {
            fn typescript(_: &mut Declarations) -> String {
                $ts.to_owned()
            }
        }
    )*};
}

named! {
    bool => "boolean",
    char => "string",
    String => "string",
    f32 => "number",
    f64 => "number",
    i8 => "number",
    i16 => "number",
    i32 => "number",
    u8 => "number",
    u16 => "number",
    u32 => "number",
    i64 => WIDE_INTEGER,
    u64 => WIDE_INTEGER,
    i128 => WIDE_INTEGER,
    u128 => WIDE_INTEGER,
    isize => WIDE_INTEGER,
    usize => WIDE_INTEGER,
    bytes::Bytes => "Uint8Array",
    bytes::BytesMut => "Uint8Array",
}

impl TypeScript for () {
    fn typescript(_: &mut Declarations) -> String {
        "undefined".to_owned()
    }
    fn parameters(_: &mut Declarations) -> Option<Vec<String>> {
        Some(Vec::new())
    }
}

impl<T: TypeScript> TypeScript for Option<T> {
    fn typescript(decls: &mut Declarations) -> String {
        format!("{} | null", T::typescript(decls))
    }
    const OPTIONAL: bool = true;
}

/// `Array<T>`, with parentheses around a union.
fn array_of(item: String) -> String {
    format!("Array<{item}>")
}

macro_rules! sequences {
    ($($ty:ident),*) => {$(
        impl<T: TypeScript> TypeScript for std::collections::$ty<T> {
            fn typescript(decls: &mut Declarations) -> String {
                array_of(T::typescript(decls))
            }
        }
    )*};
}

sequences!(VecDeque, BTreeSet, LinkedList);

impl<T: TypeScript> TypeScript for Vec<T> {
    fn typescript(decls: &mut Declarations) -> String {
        array_of(T::typescript(decls))
    }
}

impl<T: TypeScript, S> TypeScript for std::collections::HashSet<T, S> {
    fn typescript(decls: &mut Declarations) -> String {
        array_of(T::typescript(decls))
    }
}

impl<T: TypeScript, const N: usize> TypeScript for [T; N] {
    fn typescript(decls: &mut Declarations) -> String {
        array_of(T::typescript(decls))
    }
}

impl<K: TypeScript, V: TypeScript, S> TypeScript for std::collections::HashMap<K, V, S> {
    fn typescript(decls: &mut Declarations) -> String {
        K::typescript(decls);
        format!("Record<string, {}>", V::typescript(decls))
    }
}

impl<K: TypeScript, V: TypeScript> TypeScript for std::collections::BTreeMap<K, V> {
    fn typescript(decls: &mut Declarations) -> String {
        K::typescript(decls);
        format!("Record<string, {}>", V::typescript(decls))
    }
}

impl<T: TypeScript + ?Sized> TypeScript for Box<T> {
    fn typescript(decls: &mut Declarations) -> String {
        T::typescript(decls)
    }
    const OPTIONAL: bool = T::OPTIONAL;
}

impl<T: TypeScript + ?Sized> TypeScript for std::sync::Arc<T> {
    fn typescript(decls: &mut Declarations) -> String {
        T::typescript(decls)
    }
    const OPTIONAL: bool = T::OPTIONAL;
}

macro_rules! tuples {
    ($(($($t:ident),+))*) => {$(
        impl<$($t: TypeScript),+> TypeScript for ($($t,)+) {
            fn typescript(decls: &mut Declarations) -> String {
                format!("[{}]", [$($t::typescript(decls)),+].join(", "))
            }
            fn parameters(decls: &mut Declarations) -> Option<Vec<String>> {
                Some(vec![$($t::typescript(decls)),+])
            }
        }
    )*};
}

tuples! {
    (A)
    (A, B)
    (A, B, C)
    (A, B, C, D)
    (A, B, C, D, E)
    (A, B, C, D, E, F)
    (A, B, C, D, E, F, G)
    (A, B, C, D, E, F, G, H)
}

impl<A: TypeScript, R: TypeScript> TypeScript for crate::Callback<A, R> {
    fn typescript(decls: &mut Declarations) -> String {
        let params = match A::parameters(decls) {
            Some(types) if types.len() == 1 => vec![format!("arg: {}", types[0])],
            Some(types) => types
                .iter()
                .enumerate()
                .map(|(i, ty)| format!("arg{i}: {ty}"))
                .collect(),
            None => vec![format!("arg: {}", A::typescript(decls))],
        };
        let result = if R::parameters(decls).is_some_and(|p| p.is_empty()) {
            // `()`: whatever the function returns is not used.
            "void".to_owned()
        } else {
            R::typescript(decls)
        };
        format!("({}) => {result} | Promise<{result}>", params.join(", "))
    }
}

/// A stream arrives as a `ReadableStream` of its items (and is sent as one).
impl<T: TypeScript> TypeScript for crate::Stream<T> {
    fn typescript(decls: &mut Declarations) -> String {
        format!("ReadableStream<{}>", T::typescript(decls))
    }
}

/// A stream sender arrives as a `WritableStream` of its items (and a
/// `WritableStream` is sent as one).
impl<T: TypeScript> TypeScript for crate::StreamSender<T> {
    fn typescript(decls: &mut Declarations) -> String {
        format!("WritableStream<{}>", T::typescript(decls))
    }
}

/// A byte writer arrives as a `WritableStream` of `Uint8Array` chunks.
impl TypeScript for crate::ByteWriter {
    fn typescript(_: &mut Declarations) -> String {
        "WritableStream<Uint8Array>".to_owned()
    }
}

/// A byte stream arrives as a `ReadableStream` of `Uint8Array` chunks.
impl TypeScript for crate::ByteStream {
    fn typescript(_: &mut Declarations) -> String {
        "ReadableStream<Uint8Array>".to_owned()
    }
}

/// A callback inside a type deriving [`ts_rs::TS`]: the same function type.
impl<A: ts_rs::TS, R: ts_rs::TS> ts_rs::TS for crate::Callback<A, R> {
    type WithoutGenerics = crate::Callback<ts_rs::Dummy, ts_rs::Dummy>;
    type OptionInnerType = Self;

    fn name(cfg: &ts_rs::Config) -> String {
        let result = R::name(cfg);
        format!("(arg: {}) => {result} | Promise<{result}>", A::name(cfg))
    }

    fn inline(cfg: &ts_rs::Config) -> String {
        Self::name(cfg)
    }

    fn visit_dependencies(v: &mut impl ts_rs::TypeVisitor)
    where
        Self: 'static,
    {
        v.visit::<A>();
        v.visit::<R>();
    }
}

/// Streams and stream senders inside a type deriving [`ts_rs::TS`]: a
/// `ReadableStream` or a `WritableStream` of their items.
macro_rules! ts_rs_streams {
    ($($ty:ident => $ts:literal),*) => {
        $(
            impl<T: ts_rs::TS> ts_rs::TS for crate::$ty<T> {
                type WithoutGenerics = crate::$ty<ts_rs::Dummy>;
                type OptionInnerType = Self;

                fn name(cfg: &ts_rs::Config) -> String {
                    format!(concat!($ts, "<{}>"), T::name(cfg))
                }

                fn inline(cfg: &ts_rs::Config) -> String {
                    Self::name(cfg)
                }

                fn visit_dependencies(v: &mut impl ts_rs::TypeVisitor)
                where
                    Self: 'static,
                {
                    v.visit::<T>();
                }
            }
        )*
    };
}

ts_rs_streams!(Stream => "ReadableStream", StreamSender => "WritableStream");

/// Byte streams and writers inside a type deriving [`ts_rs::TS`].
macro_rules! ts_rs_bytes {
    ($($ty:ty => $ts:literal),*) => {
        $(
            impl ts_rs::TS for $ty {
                type WithoutGenerics = Self;
                type OptionInnerType = Self;

                fn name(_: &ts_rs::Config) -> String {
                    $ts.to_owned()
                }

                fn inline(cfg: &ts_rs::Config) -> String {
                    Self::name(cfg)
                }
            }
        )*
    };
}

ts_rs_bytes!(
    crate::ByteStream => "ReadableStream<Uint8Array>",
    crate::ByteWriter => "WritableStream<Uint8Array>"
);

/// The TypeScript interface of a generated client's trait: implemented when every
/// type the trait's methods name implements [`TypeScript`] (a condition checked
/// only when asked for, so enabling the feature holds no other trait to it).
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no TypeScript declarations: a type its trait names implements neither `farcall::capnweb::typescript::TypeScript` nor (with `from_ts_rs!`) `ts_rs::TS`",
    note = "derive `ts_rs::TS` on your types and name them with `farcall::capnweb::typescript::from_ts_rs!(...)`"
)]
pub trait TypeScriptInterface: TypeScript {
    /// The trait's name.
    const NAME: &'static str;
    /// The trait's documentation.
    const DOC: &'static str;
    /// The trait's methods, declaring the types they name in `decls`.
    #[doc(hidden)]
    fn methods(decls: &mut Declarations) -> Vec<MethodDecl>;
}

/// How a client names its interface: declared in full when its trait's types all
/// have declarations, else without methods. Used by generated code.
#[doc(hidden)]
pub mod __probe {
    use std::marker::PhantomData;

    use super::{Declarations, TypeScriptInterface};

    pub struct Probe<T: ?Sized>(PhantomData<T>);

    impl<T: ?Sized> Probe<T> {
        pub const NEW: Self = Probe(PhantomData);
    }

    pub trait Described {
        fn interface(&self, decls: &mut Declarations, name: &'static str) -> String;
    }

    impl<T: TypeScriptInterface + ?Sized> Described for &Probe<T> {
        fn interface(&self, decls: &mut Declarations, _: &'static str) -> String {
            decls.interface(T::NAME, T::DOC, T::methods)
        }
    }

    pub trait Undescribed {
        fn interface(&self, decls: &mut Declarations, name: &'static str) -> String;
    }

    impl<T: ?Sized> Undescribed for Probe<T> {
        fn interface(&self, decls: &mut Declarations, name: &'static str) -> String {
            decls.interface(
                name,
                "Methods not described: a type this trait names has no TypeScript declaration.",
                |_| Vec::new(),
            )
        }
    }
}

/// The TypeScript of a generated client (see [`TypeScriptInterface`]). Expands to
/// nothing without the feature.
#[doc(hidden)]
#[macro_export]
macro_rules! __typescript_client {
    (@returns $decls:ident unit) => { ::std::option::Option::None };
    (@returns $decls:ident $kind:ident $ret:ty) => {
        ::std::option::Option::Some(
            <$ret as $crate::capnweb::typescript::TypeScript>::typescript($decls),
        )
    };
    (@fallible fallible) => { true };
    (@fallible $kind:ident) => { false };
    (
        $client:ident, $name:literal, $doc:literal,
        [$({
            $method:literal, $mdoc:literal,
            [$(($arg:literal, $ty:ty)),*],
            $kind:ident $(($ret:ty))?
        })*],
        [$($wire:ty),*]
    ) => {
        #[automatically_derived]
        impl $crate::capnweb::typescript::TypeScript for $client {
            fn typescript(
                decls: &mut $crate::capnweb::typescript::Declarations,
            ) -> ::std::string::String {
                #[allow(unused_imports)]
                use $crate::capnweb::typescript::__probe::{Described as _, Undescribed as _};
                (&&$crate::capnweb::typescript::__probe::Probe::<Self>::NEW).interface(decls, $name)
            }
        }

        #[automatically_derived]
        impl $crate::capnweb::typescript::TypeScriptInterface for $client
        where
            $(for<'__x> $wire: $crate::capnweb::typescript::TypeScript,)*
        {
            const NAME: &'static str = $name;
            const DOC: &'static str = $doc;
            fn methods(
                decls: &mut $crate::capnweb::typescript::Declarations,
            ) -> ::std::vec::Vec<$crate::capnweb::typescript::MethodDecl> {
                ::std::vec![$(
                    $crate::capnweb::typescript::MethodDecl {
                        name: $method,
                        doc: $mdoc,
                        args: ::std::vec![$((
                            $arg,
                            <$ty as $crate::capnweb::typescript::TypeScript>::typescript(decls),
                            <$ty as $crate::capnweb::typescript::TypeScript>::OPTIONAL,
                        )),*],
                        returns: $crate::__typescript_client!(@returns decls $kind $($ret)?),
                        fallible: $crate::__typescript_client!(@fallible $kind),
                    },
                )*]
            }
        }

        #[automatically_derived]
        impl $crate::capnweb::typescript::ts_rs::TS for $client {
            type WithoutGenerics = Self;
            type OptionInnerType = Self;
            fn name(_: &$crate::capnweb::typescript::ts_rs::Config) -> ::std::string::String {
                <::std::string::String as ::std::convert::From<&str>>::from($name)
            }
            fn inline(_: &$crate::capnweb::typescript::ts_rs::Config) -> ::std::string::String {
                <::std::string::String as ::std::convert::From<&str>>::from($name)
            }
        }
    };
}
