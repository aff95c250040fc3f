//! The wiring layer: one builder per function, turning its configuration into the wired
//! service. The only place that knows every part (configuration, adapters, domain); the
//! functions' `main`, the tests and the bench all call it, so what runs in Lambda is what
//! they test and measure.

#[cfg(feature = "lease")]
pub mod lease;
#[cfg(feature = "database")]
pub mod rotate_database;
#[cfg(feature = "iam")]
pub mod rotate_iam_key;
