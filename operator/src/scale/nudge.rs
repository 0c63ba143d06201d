//! What a scale loop (or its supervisor) asks of the controller. The loop knows nothing of the
//! controller: it sends a [`Nudge`] down a channel the controller reads.

use futures::channel::mpsc::UnboundedSender;

/// A request for the controller's attention about one ScaledObject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Nudge {
    /// Reconcile it now: its metrics changed, so its HPA must be reshaped, or its loop ended
    /// and must be started again.
    Reconcile {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// Build its scalers again (authentication read afresh), then reconcile.
    Rebuild {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
}

impl Nudge {
    /// The object's namespace and name.
    pub fn object(&self) -> (&str, &str) {
        match self {
            Nudge::Reconcile { namespace, name } | Nudge::Rebuild { namespace, name } => {
                (namespace, name)
            }
        }
    }
}

/// One ScaledObject's way to nudge the controller; sends nothing while no controller listens.
#[derive(Clone, Debug)]
pub struct Nudger {
    namespace: String,
    name: String,
    sender: Option<UnboundedSender<Nudge>>,
}

impl Nudger {
    /// Nudges about `namespace/name` go to `sender`.
    pub fn new(namespace: &str, name: &str, sender: Option<UnboundedSender<Nudge>>) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            sender,
        }
    }

    /// Asks for a reconcile of the object.
    pub fn reconcile(&self) {
        self.send(Nudge::Reconcile {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        });
    }

    /// Asks for the object's scalers to be built again.
    pub fn rebuild(&self) {
        self.send(Nudge::Rebuild {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        });
    }

    fn send(&self, nudge: Nudge) {
        if let Some(sender) = &self.sender {
            // The controller has stopped: nobody to ask, and its loops are being stopped.
            let _ = sender.unbounded_send(nudge);
        }
    }
}
