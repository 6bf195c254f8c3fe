//! The model: its exported folder, the ONNX Runtime session, one forward pass per
//! batch (pooling and NLL where the graph leaves them to the host), and the parity
//! rule its probes must meet before a run starts.

pub mod forward;
pub mod graph;
pub mod model_dir;
pub mod nll;
pub mod parity;
pub mod pooling;
pub mod probe;
pub mod runtime;
