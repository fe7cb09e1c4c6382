//! nginx in a namespace, for the live tests and the benchmark: its configuration,
//! pid file and temporary files in a directory of its own, stopped and the directory
//! removed on drop.

use std::{
    io,
    path::PathBuf,
    process::{Child, Stdio},
};

use super::Netns;

pub struct Nginx {
    child: Child,
    /// The working directory; `server` blocks may serve files from it.
    pub dir: PathBuf,
}

impl Nginx {
    /// Starts nginx in `ns` with one `server` block (e.g. `server { listen 80; ... }`),
    /// working in `dir` (created if missing).
    pub fn start(ns: &Netns, dir: PathBuf, server: &str) -> io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        let conf = format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             {server} }}\n"
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf)?;
        let child = ns
            .command("nginx")
            .args(["-e", "stderr", "-p", &d.to_string(), "-c", &path.display().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        Ok(Nginx { child, dir })
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
