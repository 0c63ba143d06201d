//! Maps trigger `type` strings to scaler constructors.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::ScalerError;
use crate::scaler::Scaler;
use crate::trigger::Trigger;

/// Builds a scaler from a trigger; parses everything up front.
pub type Constructor = Arc<dyn Fn(&Trigger) -> Result<Box<dyn Scaler>, ScalerError> + Send + Sync>;

/// The trigger types a build of ebb understands.
#[derive(Clone, Default)]
pub struct Registry {
    constructors: BTreeMap<String, Constructor>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry with every built-in scaler.
    pub fn with_builtins() -> Self {
        let mut registry = Self::new();
        crate::builtin::register(&mut registry);
        registry
    }

    /// Adds (or replaces) the constructor for `trigger_type`.
    pub fn register<F>(&mut self, trigger_type: &str, constructor: F) -> &mut Self
    where
        F: Fn(&Trigger) -> Result<Box<dyn Scaler>, ScalerError> + Send + Sync + 'static,
    {
        self.constructors
            .insert(trigger_type.to_string(), Arc::new(constructor));
        self
    }

    /// The registered types, sorted.
    pub fn types(&self) -> impl Iterator<Item = &str> {
        self.constructors.keys().map(String::as_str)
    }

    /// Builds the scaler for `trigger`.
    pub fn build(&self, trigger: &Trigger) -> Result<Box<dyn Scaler>, ScalerError> {
        let constructor = self
            .constructors
            .get(&trigger.trigger_type)
            .ok_or_else(|| ScalerError::UnknownType {
                index: trigger.index,
                trigger_type: trigger.trigger_type.clone(),
            })?;
        constructor(trigger)
    }
}
