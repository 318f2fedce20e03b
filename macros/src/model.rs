//! The parsed form of a `#[remote]` trait. It borrows the original syntax so that
//! checks, expansion and errors keep the user's spans. Building it accepts anything
//! that parses as a trait: whether the trait follows the rules is `check`'s job.

use proc_macro2::TokenStream;
use quote::{format_ident, ToTokens};
use syn::ext::IdentExt;
use syn::parse::ParseStream;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, Pat, PatType, Path, PathArguments,
    Receiver, ReturnType, Token, TraitItem, TraitItemFn, Type,
};

use crate::errors::Errors;
use crate::hash;

pub(crate) struct RemoteTrait<'a> {
    pub(crate) item: &'a ItemTrait,
    /// The tokens inside `#[remote(...)]`, as written.
    pub(crate) attr_args: TokenStream,
    /// The trait's name without any `r#`, for generated names and the wire.
    pub(crate) name: String,
    pub(crate) methods: Vec<RemoteMethod<'a>>,
    /// Trait items that are not methods (constants, types, macros).
    pub(crate) others: Vec<&'a TraitItem>,
}

pub(crate) struct RemoteMethod<'a> {
    pub(crate) item: &'a TraitItemFn,
    /// The method's name without any `r#`.
    pub(crate) name: String,
    pub(crate) id: u32,
    /// The first input, if it is a form of `self`.
    pub(crate) receiver: Option<&'a Receiver>,
    pub(crate) args: Vec<Arg<'a>>,
    pub(crate) ret: Ret<'a>,
    pub(crate) options: Options,
}

pub(crate) struct Arg<'a> {
    pub(crate) item: &'a PatType,
    /// The argument's name: its identifier, or `argN` for a pattern (which `check`
    /// rejects, so it is never generated).
    pub(crate) name: Ident,
    pub(crate) ty: &'a Type,
}

pub(crate) enum Ret<'a> {
    /// No return type.
    Unit,
    /// Any type but `Result<T, E>`.
    Plain(&'a Type),
    /// `Result<T, E>`: `E` is an application error.
    Fallible { ok: &'a Type, err: &'a Type },
}

/// The `#[farcall(...)]` options of a method.
#[derive(Default)]
pub(crate) struct Options {
    /// `oneway`: no reply.
    pub(crate) oneway: bool,
    /// `no_cancel`: runs to completion even if the caller gives up.
    pub(crate) no_cancel: bool,
    /// Options farcall does not know, as written.
    pub(crate) unknown: Vec<Path>,
}

impl<'a> RemoteTrait<'a> {
    /// Builds the model. Only attributes that cannot be read at all are reported
    /// (to `errors`); everything else is recorded as written, for `check`.
    pub(crate) fn new(attr_args: TokenStream, item: &'a ItemTrait, errors: &mut Errors) -> Self {
        let mut methods = Vec::new();
        let mut others = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(method) => methods.push(RemoteMethod::new(method, errors)),
                other => others.push(other),
            }
        }
        RemoteTrait {
            item,
            attr_args,
            name: item.ident.unraw().to_string(),
            methods,
            others,
        }
    }

    /// Every type that crosses a connection (arguments, values and errors), method by
    /// method, as written.
    pub(crate) fn wire_types(&self) -> impl Iterator<Item = &'a Type> + '_ {
        self.methods.iter().flat_map(RemoteMethod::wire_types)
    }

    /// A hash of the trait's name and every method signature.
    pub(crate) fn fingerprint(&self) -> u64 {
        let mut text = self.name.clone();
        for m in &self.methods {
            let signature = signature_text(m.options.oneway, &m.args, &m.item.sig.output);
            text.push_str(&format!("|{}{signature}", m.name));
        }
        hash::fnv64(text.as_bytes())
    }
}

impl<'a> RemoteMethod<'a> {
    fn new(item: &'a TraitItemFn, errors: &mut Errors) -> Self {
        let sig = &item.sig;
        let options = options(&item.attrs, errors);
        let receiver = match sig.inputs.first() {
            Some(FnArg::Receiver(receiver)) => Some(receiver),
            _ => None,
        };
        let args: Vec<Arg<'a>> = sig
            .inputs
            .iter()
            .filter_map(|input| match input {
                FnArg::Typed(typed) => Some(typed),
                FnArg::Receiver(_) => None,
            })
            .enumerate()
            .map(|(i, typed)| Arg {
                item: typed,
                name: match &*typed.pat {
                    Pat::Ident(pat) => pat.ident.clone(),
                    _ => format_ident!("arg{i}"),
                },
                ty: &typed.ty,
            })
            .collect();
        let ret = match &sig.output {
            ReturnType::Default => Ret::Unit,
            ReturnType::Type(_, ty) => classify_return(ty),
        };
        let name = sig.ident.unraw().to_string();
        let signature = signature_text(options.oneway, &args, &sig.output);
        RemoteMethod {
            item,
            id: hash::method_id(&name, &signature),
            name,
            receiver,
            args,
            ret,
            options,
        }
    }

    /// The types this method sends across a connection: its arguments, then the
    /// value and the error it returns.
    pub(crate) fn wire_types(&self) -> impl Iterator<Item = &'a Type> + '_ {
        let returned = match self.ret {
            Ret::Unit => [None, None],
            Ret::Plain(ty) => [Some(ty), None],
            Ret::Fallible { ok, err } => [Some(ok), Some(err)],
        };
        self.args
            .iter()
            .map(|arg| arg.ty)
            .chain(returned.into_iter().flatten())
    }
}

/// Reads the `#[farcall(...)]` options of a method. Unknown options are kept for
/// `check` (with any value they were given, so that is not a second error).
fn options(attrs: &[Attribute], errors: &mut Errors) -> Options {
    let mut options = Options::default();
    for attr in attrs.iter().filter(|a| is_farcall_attr(a)) {
        let parsed = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("oneway") {
                options.oneway = true;
            } else if meta.path.is_ident("no_cancel") {
                options.no_cancel = true;
            } else {
                options.unknown.push(meta.path.clone());
                skip_value(meta.input)?;
            }
            Ok(())
        });
        if let Err(e) = parsed {
            errors.push(e);
        }
    }
    options
}

/// Skips `= value` or `(...)` after an option's name.
fn skip_value(input: ParseStream<'_>) -> syn::Result<()> {
    if input.peek(Token![=]) {
        input.parse::<Token![=]>()?;
        input.parse::<syn::Expr>()?;
    } else if input.peek(syn::token::Paren) {
        let content;
        syn::parenthesized!(content in input);
        content.parse::<TokenStream>()?;
    }
    Ok(())
}

/// `Result<T, E>` (any path ending in `Result` with two type arguments) carries an
/// application error; `()` is unit; anything else is a plain value.
fn classify_return(ty: &Type) -> Ret<'_> {
    if let Type::Tuple(tuple) = ty {
        if tuple.elems.is_empty() {
            return Ret::Unit;
        }
    }
    if let Type::Path(path) = ty {
        if path.qself.is_none() {
            if let Some(last) = path.path.segments.last() {
                if last.ident == "Result" {
                    if let PathArguments::AngleBracketed(args) = &last.arguments {
                        let types: Vec<&Type> = args
                            .args
                            .iter()
                            .filter_map(|a| match a {
                                GenericArgument::Type(t) => Some(t),
                                _ => None,
                            })
                            .collect();
                        if let [ok, err] = types[..] {
                            if args.args.len() == 2 {
                                return Ret::Fallible { ok, err };
                            }
                        }
                    }
                }
            }
        }
    }
    Ret::Plain(ty)
}

pub(crate) fn is_farcall_attr(attr: &Attribute) -> bool {
    attr.path().is_ident("farcall")
}

/// A method's signature as written: one-way or not, argument types, result type.
/// Two builds whose text differs disagree on the method's types (or spell the same
/// types differently, which is reported the same way).
fn signature_text(oneway: bool, args: &[Arg<'_>], output: &ReturnType) -> String {
    let mut text = String::from(if oneway { "oneway " } else { "" });
    for arg in args {
        text.push_str(&format!(",{}", arg.ty.to_token_stream()));
    }
    text.push_str(&format!("->{}", output.to_token_stream()));
    text
}
