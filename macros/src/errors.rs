//! Collects errors across phases so that one compile reports every mistake.

#[derive(Default)]
pub(crate) struct Errors(Vec<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        self.0.push(error);
    }

    /// Every error joined into one (`syn::Error::combine`), or `Ok` if there is none.
    pub(crate) fn finish(self) -> syn::Result<()> {
        let mut all = self.0.into_iter();
        match all.next() {
            None => Ok(()),
            Some(mut first) => {
                all.for_each(|e| first.combine(e));
                Err(first)
            }
        }
    }
}
