//! The parsed form of a `#[remote]` trait. It borrows the original syntax so that
//! expansion and errors keep the user's spans.

use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, Pat, PathArguments, ReturnType, TraitItem,
    TraitItemFn, Type,
};

use crate::check::{self, Errors};
use crate::hash;

pub(crate) struct RemoteTrait<'a> {
    pub(crate) item: &'a ItemTrait,
    /// The trait's name without any `r#`, for generated names and the wire.
    pub(crate) name: String,
    pub(crate) methods: Vec<RemoteMethod<'a>>,
}

pub(crate) struct RemoteMethod<'a> {
    pub(crate) item: &'a TraitItemFn,
    /// The method's name without any `r#`.
    pub(crate) name: String,
    pub(crate) id: u32,
    pub(crate) args: Vec<Arg<'a>>,
    pub(crate) ret: Ret<'a>,
    pub(crate) oneway: bool,
    /// Runs to completion even when the caller gives up.
    pub(crate) no_cancel: bool,
}

pub(crate) struct Arg<'a> {
    pub(crate) name: &'a Ident,
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

impl<'a> RemoteTrait<'a> {
    /// Builds the model, collecting every rule violation into one error.
    pub(crate) fn parse(item: &'a ItemTrait) -> syn::Result<Self> {
        let mut errors = Errors::default();
        check::trait_shape(item, &mut errors);
        let mut methods = Vec::new();
        for trait_item in &item.items {
            match trait_item {
                TraitItem::Fn(method) => {
                    if let Some(m) = RemoteMethod::parse(method, &mut errors) {
                        methods.push(m);
                    }
                }
                other => errors.push(check::not_a_method(other)),
            }
        }
        check::unique_ids(&methods, &mut errors);
        errors.finish()?;
        Ok(RemoteTrait {
            item,
            name: item.ident.unraw().to_string(),
            methods,
        })
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
            let signature = signature_text(m.oneway, &m.args, &m.item.sig.output);
            text.push_str(&format!("|{}{signature}", m.name));
        }
        hash::fnv64(text.as_bytes())
    }
}

impl<'a> RemoteMethod<'a> {
    fn parse(item: &'a TraitItemFn, errors: &mut Errors) -> Option<Self> {
        let before = errors.len();
        let sig = &item.sig;
        check::signature(sig, errors);
        let options = check::options(&item.attrs, errors);
        let oneway = options.oneway;
        let mut args = Vec::new();
        for input in sig.inputs.iter().skip(1) {
            if let FnArg::Typed(typed) = input {
                check::argument(typed, errors);
                if let Pat::Ident(pat) = &*typed.pat {
                    args.push(Arg {
                        name: &pat.ident,
                        ty: &typed.ty,
                    });
                }
            }
        }
        let ret = match &sig.output {
            ReturnType::Default => Ret::Unit,
            ReturnType::Type(_, ty) => {
                check::return_type(ty, errors);
                classify_return(ty)
            }
        };
        if oneway && !matches!(ret, Ret::Unit) {
            errors.push(check::oneway_returns(&sig.output));
        }
        (errors.len() == before).then(|| {
            let name = sig.ident.unraw().to_string();
            let signature = signature_text(oneway, &args, &sig.output);
            RemoteMethod {
                item,
                id: hash::method_id(&name, &signature),
                name,
                args,
                ret,
                oneway,
                no_cancel: options.no_cancel,
            }
        })
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

/// Removes `#[farcall(...)]` attributes, which mean nothing to the compiler.
pub(crate) fn strip_farcall_attrs(item: &mut ItemTrait) {
    for trait_item in &mut item.items {
        if let TraitItem::Fn(method) = trait_item {
            method.attrs.retain(|a| !is_farcall_attr(a));
        }
    }
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
