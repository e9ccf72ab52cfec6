//! The `refgate record` dashboard.
