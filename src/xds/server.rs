//! tonic ADS service.
