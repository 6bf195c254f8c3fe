//! The statistics, pure numerics without I/O: uniformity and its asymmetry,
//! correlation and permutation tests, the stratified pair bootstrap, peak
//! positions, influence at a peak, the pair-level view and linear CKA.

pub mod bootstrap;
pub mod cka;
pub mod correlation;
pub mod influence;
pub mod pairs;
pub mod peaks;
pub mod uniformity;
