//! The `knative-pilot` binary: everything lives in the library; see `cli`.

#[global_allocator]
static ALLOC: knative_pilot::Allocator = knative_pilot::Allocator;

fn main() -> std::process::ExitCode {
    knative_pilot::cli::main()
}
