//! The binary Trunk builds: everything is in the library.

fn main() {
    darkroom_web::start();
}
