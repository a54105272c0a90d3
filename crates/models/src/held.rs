//! Where a module's weights wait between uses: on the GPU, or in host memory and uploaded only
//! while the module runs (A1111's "medvram" for text encoders): the GPU then holds the module's
//! weights only during its stage, at the cost of an upload each time it runs.

use darkroom_gpu::{DType, Gpu};

use crate::loader::{ModelError, QuantPolicy, Vb, WeightStore};

/// Builds the module from its weights (the same function that loaded it).
type Build<T> = Box<dyn Fn(&Vb) -> Result<T, ModelError> + Send + Sync>;

/// A module kept on the GPU, or kept as a host-memory store ([`crate::Stager::keep_on_host`])
/// and built on the GPU on demand.
pub enum Held<T> {
    Gpu(T),
    Host { store: WeightStore, dtype: DType, policy: QuantPolicy, build: Build<T> },
}

/// A held module ready to run: borrowed when it lives on the GPU, built for this use (and its
/// weights freed when this is dropped) when it waits on the host.
pub enum InUse<'a, T> {
    Resident(&'a T),
    Uploaded(T),
}

impl<T> std::ops::Deref for InUse<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            InUse::Resident(t) => t,
            InUse::Uploaded(t) => t,
        }
    }
}

impl<T> Held<T> {
    /// Builds the module from `store` with `build` and requires every key of the file to be
    /// used (but those `ignorable` says may be left). `on_host`: the module built is dropped and
    /// the store kept, so its weights leave the GPU until [`Held::on_gpu`]; else the module
    /// stays on the GPU and the store goes.
    pub fn load(
        gpu: &Gpu,
        store: WeightStore,
        (dtype, policy): (DType, QuantPolicy),
        build: impl Fn(&Vb) -> Result<T, ModelError> + Send + Sync + 'static,
        ignorable: impl Fn(&str) -> bool,
        on_host: bool,
    ) -> Result<Held<T>, ModelError> {
        let module = build(&store.root(gpu, dtype, policy))?;
        if store.unused_keys().iter().any(|k| !ignorable(k)) {
            store.require_all_used()?;
        }
        if !on_host {
            return Ok(Held::Gpu(module));
        }
        drop(module);
        Ok(Held::Host { store, dtype, policy, build: Box::new(build) })
    }

    /// The module on the GPU: the resident one, or one uploaded from host memory now.
    pub fn on_gpu(&self, gpu: &Gpu) -> Result<InUse<'_, T>, ModelError> {
        match self {
            Held::Gpu(t) => Ok(InUse::Resident(t)),
            Held::Host { store, dtype, policy, build } => {
                Ok(InUse::Uploaded(build(&store.root(gpu, *dtype, *policy))?))
            }
        }
    }

    /// Whether the module waits in host memory between uses.
    pub fn is_on_host(&self) -> bool {
        matches!(self, Held::Host { .. })
    }
}
