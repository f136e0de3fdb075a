//! Drives the stages for one resolved build.
