//! spillway-core
