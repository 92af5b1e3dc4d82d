//! `cargo run -p minka-ffi --bin uniffi-bindgen -- generate --library <libminka_ffi.so> --language kotlin --out-dir <dir>`
fn main() {
    uniffi::uniffi_bindgen_main()
}
