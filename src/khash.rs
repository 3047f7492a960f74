//! K-Network-Hash.
