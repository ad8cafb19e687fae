use std::process::Command;

fn main() {
    // The extension lands in site-packages/dgl_rs/; libtorch lives in
    // site-packages/torch/lib. This lets the module load without LD_LIBRARY_PATH.
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/../torch/lib");
    // Record the torch version we build against; the package checks it at import.
    let python = std::env::var("PYTHON_SYS_EXECUTABLE")
        .or_else(|_| std::env::var("VIRTUAL_ENV").map(|v| format!("{v}/bin/python")))
        .unwrap_or_else(|_| "python3".to_string());
    if let Ok(out) = Command::new(python).args(["-c", "import torch; print(torch.__version__)"]).output() {
        if out.status.success() {
            let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
            println!("cargo:rustc-env=DGL_RS_TORCH_VERSION={v}");
        }
    }
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
}
