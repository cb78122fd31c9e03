//! Integration tests of the `schemas` crate, in one test binary (one link, one run).

mod signing_vectors;
