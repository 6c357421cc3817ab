// SPDX-License-Identifier: MPL-2.0
//! The plugin's one tokio runtime. Only network I/O runs here: no frame
//! conversion, no model compute, and no buffer is ever pushed from it.

use std::sync::LazyLock;

pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .thread_name("vsssummarize-net")
        .build()
        .expect("cannot start the vsssummarize tokio runtime")
});
