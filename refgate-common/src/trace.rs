//! The `trace.bin` file format. (Being written: see the format issue.)
