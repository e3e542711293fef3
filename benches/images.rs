//! The images part, on the big environment:
//! - export: `blast export -e big -o FILE.blast` against archiving the environment's directory with
//!   `tar -cf - . | zstd -3`, zstd on every core (`-T0`) and on one (`-T1`, like for like: blast compresses
//!   single-threaded so that any machine writes the same bytes), and with `tar czf`; the four interleaved,
//!   each run writing a new file, timed and its size kept. The archives leave `__pycache__` out, as blast's
//!   capture does (pip compiled bytecode into the big environment). Every timed export is checked to be
//!   byte for byte the untimed one made first, which the other measurements use.
//! - restore: `blast restore IMAGE --path DIR --python PY` into a fresh store against `uv pip install` of
//!   the wheel set (`--no-index --find-links WHEELS`, every distribution by name) into a fresh
//!   `python -m venv --without-pip` venv with a cold cache. Each run gets an empty `BLAST_HOME`, or an
//!   empty `UV_CACHE_DIR` beside its venv (one filesystem, so uv links from its cache as blast links from
//!   its store), made outside the timing; every result is checked to hold each distribution, and one
//!   untimed restore first to import the requirements.
//! - thin images of three one-package changes: `blastdep` from blast's fixture wheels (6 small files)
//!   installed with pip on a `blast sync` copy of the big environment, and `rich` and `numpy` from the
//!   wheel set installed (`--no-deps`) into a new environment (the big one's history holds them already,
//!   and what a base holds is left out); captured with `blast snapshot` and exported with `--base @~1`: the size against the full image's, the
//!   package's files (as its RECORD lists them, bytecode left out) and those files through
//!   `tar | zstd -3`. Two targets: at most the changed files plus 64 KiB, and the stricter one, at most 1%
//!   over the package's files compressed.

use std::cell::Cell;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::bigenv::{BigEnv, NAME};
use crate::error::{Context, Error, Result};
use crate::files::{Scratch, remove_dir, tree_stats};
use crate::install::{Installer, Installs, ONE_PACKAGE};
use crate::materialize::IMPORTS;
use crate::report::{Results, Row, Target, count, size};
use crate::runner::{Case, json, measure, run};
use crate::setup::{Setup, fixture_wheels};

/// The one-package change a thin image carries.
enum OnePackage {
    /// A tiny package from blast's fixture wheels, installed on top.
    Fixture(&'static str),
    /// A distribution of the wheel set, installed (without its dependencies) into a new environment.
    FromWheelSet(&'static str),
}

impl OnePackage {
    fn name(&self) -> &'static str {
        match self {
            OnePackage::Fixture(name) | OnePackage::FromWheelSet(name) => name,
        }
    }
}

/// What a thin image may hold beyond the changed files: its manifest, the new snapshot and layer, tar
/// headers.
const THIN_SLACK: u64 = 64 * 1024;

/// `tar -C DIR -cf - ENTRIES... | zstd -3 -T<threads> -o OUT`, `__pycache__` left out; it fails when
/// either side does.
fn tar_zstd<S: AsRef<OsStr>>(dir: &Path, entries: &[S], threads: u32, out: &Path) -> Command {
    let mut cmd = Command::new("bash");
    cmd.args([
        "-o",
        "pipefail",
        "-c",
        r#"dir=$1 out=$2 threads=$3; shift 3
           tar -C "$dir" --exclude=__pycache__ -cf - "$@" | zstd -q -3 -T"$threads" -o "$out""#,
        "bash",
    ])
    .arg(dir)
    .arg(out)
    .arg(threads.to_string())
    .args(entries);
    cmd
}

/// `tar -C DIR -czf OUT .`, `__pycache__` left out.
fn tar_gzip(dir: &Path, out: &Path) -> Command {
    let mut cmd = Command::new("tar");
    cmd.arg("-C")
        .arg(dir)
        .args(["--exclude=__pycache__", "-czf"])
        .arg(out)
        .arg(".");
    cmd
}

fn file_size(path: &Path) -> Result<u64> {
    Ok(fs::metadata(path)
        .context(|| format!("inspecting {}", path.display()))?
        .len())
}

fn create_dir(path: &Path) -> Result<()> {
    fs::create_dir(path).context(|| format!("creating {}", path.display()))
}

/// A case whose run `k` writes the file `file(k)`: its size goes into `size`, `check` looks at it, and
/// it is removed after the run.
fn writing<'a>(
    label: &str,
    file: impl Fn(usize) -> PathBuf + Copy + 'a,
    command: impl Fn(&Path) -> Command + 'a,
    size: &'a Cell<u64>,
    check: impl Fn(&Path) -> Result<()> + 'a,
) -> Case<'a> {
    Case::new(label, move |k| command(&file(k)))
        .inspect(move |k, _| {
            size.set(file_size(&file(k))?);
            check(&file(k))
        })
        .cleanup(move |k| {
            fs::remove_file(file(k)).context(|| format!("removing {}", file(k).display()))
        })
}

/// The work of the part, in the scratch directory `dir`, on the big environment of the store `home`.
struct Images<'a> {
    setup: &'a Setup,
    home: &'a Path,
    big: &'a BigEnv,
    dir: PathBuf,
}

impl Images<'_> {
    fn path(&self, what: &str, k: usize) -> PathBuf {
        self.dir.join(format!("{k}-{what}"))
    }

    /// `blast --json export -e big -o OUT`.
    fn export(&self, out: &Path) -> Command {
        let mut cmd = self.setup.blast(self.home);
        cmd.args(["--json", "export", "-e", NAME, "-o"]).arg(out);
        cmd
    }

    /// The untimed reference export, then blast against the archivers. Returns the results and the
    /// image.
    fn exports(&self, runs: usize) -> Result<(Results, PathBuf, u64)> {
        eprintln!(
            "images: blast export -e {NAME} vs tar | zstd -3 (-T0, -T1) and tar czf of {}",
            self.big.path.display()
        );
        let image = self.dir.join("big.blast");
        let report = json(&run(&mut self.export(&image))?)?;
        let reference = fs::read(&image).context(|| format!("reading {}", image.display()))?;
        let same_bytes = |path: &Path| {
            let bytes = fs::read(path).context(|| format!("reading {}", path.display()))?;
            if bytes == reference {
                Ok(())
            } else {
                Err(Error::new(format!(
                    "{} differs from {}: the same snapshot exported twice to different bytes",
                    path.display(),
                    image.display()
                )))
            }
        };
        let env = &self.big.path;
        let sizes: [Cell<u64>; 4] = Default::default();
        let [blast_file, t0_file, t1_file, gz_file] =
            ["export.blast", "t0.tar.zst", "t1.tar.zst", "env.tar.gz"]
                .map(|name| move |k: usize| self.path(name, k));
        let samples = {
            let cases = [
                writing(
                    "blast export",
                    blast_file,
                    |out| self.export(out),
                    &sizes[0],
                    same_bytes,
                ),
                writing(
                    "tar | zstd -3 -T0",
                    t0_file,
                    |out| tar_zstd(env, &["."], 0, out),
                    &sizes[1],
                    |_| Ok(()),
                ),
                writing(
                    "tar | zstd -3 -T1",
                    t1_file,
                    |out| tar_zstd(env, &["."], 1, out),
                    &sizes[2],
                    |_| Ok(()),
                ),
                writing(
                    "tar czf",
                    gz_file,
                    |out| tar_gzip(env, out),
                    &sizes[3],
                    |_| Ok(()),
                ),
            ];
            measure(&cases, 1, runs)?
        };
        let [blast, others @ ..] = &samples;
        let [blast_size, other_sizes @ ..] = sizes.each_ref().map(Cell::get);
        let mut results = Results::default();
        for other in others {
            results
                .rows
                .push(Row::compare("export the big env", blast, other));
        }
        for (other, other_size) in others.iter().zip(other_sizes) {
            results.rows.push(Row::sizes(
                "image of the big env, size",
                blast_size,
                &other.label,
                other_size,
            ));
        }
        results.notes.push(format!(
            "images: the image holds {} objects, {} uncompressed (identical files once), of the big \
             env's {} files, {}; the archives are of its directory with `__pycache__` left out, as \
             blast's capture leaves it out; zstd -T0 used {} threads here; every timed export was \
             byte for byte the first",
            count(report["objects"].as_u64().unwrap_or_default()),
            size(report["object_bytes"].as_u64().unwrap_or_default()),
            count(self.big.stats.files),
            size(self.big.stats.bytes),
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ));
        Ok((results, image, blast_size))
    }

    /// `blast restore` of `image` into fresh stores against uv's cold-cache install of the wheel set.
    fn restores(&self, image: &Path, runs: usize) -> Result<Results> {
        let installs = Installs::new(self.setup, self.dir.clone())?;
        eprintln!(
            "images: blast restore into a fresh store vs uv pip install of {} wheels, cold cache",
            installs.names.len()
        );
        let home = |k: usize| self.path("restore-home", k);
        let env = |k: usize| self.path("restore-env", k);
        let venv = |k: usize| self.path("uv-venv", k);
        let uv_cache = |k: usize| self.path("uv-cache", k);
        let restore = |k: usize| {
            let mut cmd = self.setup.blast(&home(k));
            cmd.args(["--json", "restore"])
                .arg(image)
                .arg("--path")
                .arg(env(k))
                .arg("--python")
                .arg(&self.setup.python);
            cmd
        };
        let holds = |dir: &Path, packages: u64| {
            let found = tree_stats(dir)?.packages;
            if found == packages {
                Ok(())
            } else {
                Err(Error::new(format!(
                    "{} holds {found} distributions, not {packages}",
                    dir.display()
                )))
            }
        };

        // One untimed restore, checked to import the requirements.
        const K: usize = usize::MAX;
        create_dir(&home(K))?;
        let report = json(&run(&mut restore(K))?)?;
        run(Command::new(env(K).join("bin/python")).args(["-c", IMPORTS]))
            .context(|| "importing the requirements in the restored environment".into())?;
        remove_dir(&env(K))?;
        remove_dir(&home(K))?;

        let cases = [
            Case::new("blast restore (fresh store)", restore)
                .prepare(|k| create_dir(&home(k)))
                .inspect(|k, _| holds(&env(k), self.big.stats.packages))
                .cleanup(|k| remove_dir(&env(k)).and(remove_dir(&home(k)))),
            Case::new("uv pip install (cold cache)", |k| {
                let mut cmd = installs.bare(Installer::Uv, &venv(k));
                cmd.env("UV_CACHE_DIR", uv_cache(k));
                cmd
            })
            .prepare(|k| installs.make_venv(&venv(k)).and(create_dir(&uv_cache(k))))
            .inspect(|k, _| holds(&venv(k), installs.names.len() as u64))
            .cleanup(|k| remove_dir(&venv(k)).and(remove_dir(&uv_cache(k)))),
        ];
        let [blast, uv] = measure(&cases, 0, runs)?;
        let import = &report["import"];
        Ok(Results {
            rows: vec![Row::compare("restore the big env's image", &blast, &uv)],
            targets: Vec::new(),
            notes: vec![format!(
                "restore: imports {} objects ({} uncompressed) from the {} image and writes {} files \
                 and links; uv's cache and blast's store start empty each run",
                count(import["new_objects"].as_u64().unwrap_or_default()),
                size(import["object_bytes"].as_u64().unwrap_or_default()),
                size(import["image_bytes"].as_u64().unwrap_or_default()),
                count(report["files"].as_u64().unwrap_or_default())
            )],
        })
    }

    /// The thin image of a one-package change against the full image of `full_bytes`.
    fn thin(&self, full_bytes: u64, change: &OnePackage) -> Result<Results> {
        let package = change.name();
        let env = self.dir.join(format!("thin-env-{package}"));
        match change {
            OnePackage::Fixture(_) => {
                eprintln!("images: thin image of {package} installed on a copy of the big env");
                run(self
                    .setup
                    .blast(self.home)
                    .args(["sync", "--from", NAME, "--to"])
                    .arg(&env))?;
            }
            OnePackage::FromWheelSet(_) => {
                // The big environment's history holds it already, and a base's objects are left
                // out: a new environment's does not.
                eprintln!("images: thin image of {package} installed into a new environment");
                run(self
                    .setup
                    .blast(self.home)
                    .args(["create", "--path"])
                    .arg(&env)
                    .arg("--python")
                    .arg(&self.setup.python))?;
            }
        }
        let pip = |args: &[&str]| {
            let mut cmd = self.setup.pip();
            cmd.arg("--python").arg(&env).args(args);
            cmd
        };
        let mut install = pip(&["install", "--no-index", "--find-links"]);
        match change {
            OnePackage::Fixture(_) => install.arg(fixture_wheels()?),
            OnePackage::FromWheelSet(_) => install.arg(&self.setup.wheels).arg("--no-deps"),
        };
        run(install.arg(package))?;
        let captured = json(&run(self
            .setup
            .blast(self.home)
            .args(["--json", "snapshot", "-e"])
            .arg(&env))?)?;
        if captured["snapshot"].is_null() {
            return Err(Error::new(format!(
                "`blast snapshot` saw no change after pip installed {package}"
            )));
        }
        let thin = self.dir.join(format!("thin-{package}.blast"));
        let exported = json(&run(self
            .setup
            .blast(self.home)
            .args(["--json", "export", "-e"])
            .arg(&env)
            .args(["--base", "@~1", "-o"])
            .arg(&thin))?)?;
        if exported["base"] != captured["parent"] {
            return Err(Error::new(format!(
                "the thin image's base is {}, not the snapshot before the install, {}",
                exported["base"], captured["parent"]
            )));
        }
        let thin_bytes = file_size(&thin)?;
        let (site, files) = package_files(&env, package)?;
        let mut files_bytes = 0;
        for file in &files {
            files_bytes += file_size(&site.join(file))?;
        }
        let compressed = self.dir.join(format!("{package}.tar.zst"));
        run(&mut tar_zstd(&site, &files, 1, &compressed))?;
        let compressed_bytes = file_size(&compressed)?;
        let operation = format!("thin image, +{package} (--base @~1), size");
        let files_label = format!("{package}'s {} files", files.len());
        Ok(Results {
            rows: vec![
                Row::sizes(&operation, thin_bytes, "full image", full_bytes),
                Row::sizes(&operation, thin_bytes, &files_label, files_bytes),
                Row::sizes(
                    &operation,
                    thin_bytes,
                    format!("{files_label}, tar | zstd -3"),
                    compressed_bytes,
                ),
            ],
            targets: vec![
                Target::size_at_most(
                    "thin image ≤ changed files + 64 KiB",
                    thin_bytes,
                    files_bytes + THIN_SLACK,
                    &format!("{} + 64 KiB", size(files_bytes)),
                ),
                Target::size_at_most(
                    "thin image ≤ package's files compressed + 1%",
                    thin_bytes,
                    compressed_bytes + compressed_bytes / 100,
                    &format!("{} + 1%", size(compressed_bytes)),
                ),
            ],
            notes: vec![format!(
                "thin image of {package}: the snapshot after the install added {} paths (files and directories), \
                 modified {}, removed {}; the image holds {} layer(s) and {} object(s) ({} \
                 uncompressed) and left out {} layer(s) and {} object(s) that its base has",
                captured["added"],
                captured["modified"],
                captured["removed"],
                exported["layers"],
                exported["objects"],
                size(exported["object_bytes"].as_u64().unwrap_or_default()),
                exported["layers_omitted"],
                exported["objects_omitted"]
            )],
        })
    }
}

/// The site-packages directory of `env` and the files of `package` in it as its RECORD lists them,
/// relative to that directory, bytecode left out.
fn package_files(env: &Path, package: &str) -> Result<(PathBuf, Vec<PathBuf>)> {
    let entries = |dir: &Path| -> Result<Vec<PathBuf>> {
        let mut paths = Vec::new();
        for entry in fs::read_dir(dir).context(|| format!("reading {}", dir.display()))? {
            paths.push(
                entry
                    .context(|| format!("reading {}", dir.display()))?
                    .path(),
            );
        }
        Ok(paths)
    };
    let site = entries(&env.join("lib"))?
        .into_iter()
        .map(|lib| lib.join("site-packages"))
        .find(|site| site.is_dir())
        .ok_or_else(|| Error::new(format!("no site-packages in {}", env.display())))?;
    let prefix = format!("{package}-");
    let dist_info = entries(&site)?
        .into_iter()
        .find(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with(&prefix) && name.ends_with(".dist-info")
        })
        .ok_or_else(|| Error::new(format!("no {package} dist-info in {}", site.display())))?;
    let record = dist_info.join("RECORD");
    let text = fs::read_to_string(&record).context(|| format!("reading {}", record.display()))?;
    let files: Vec<PathBuf> = text
        .lines()
        .filter_map(|line| line.rsplitn(3, ',').nth(2))
        .filter(|path| !path.is_empty() && !path.contains("__pycache__"))
        .map(PathBuf::from)
        .collect();
    if files.is_empty() {
        return Err(Error::new(format!("{} lists no files", record.display())));
    }
    Ok((site, files))
}

pub fn bench(
    setup: &Setup,
    home: &Path,
    big: &BigEnv,
    scratch: &Scratch,
    runs: usize,
) -> Result<Results> {
    run(Command::new("zstd").arg("--version"))
        .context(|| "the images part needs zstd (Debian's package `zstd`)".into())?;
    let images = Images {
        setup,
        home,
        big,
        dir: scratch.dir("images")?,
    };
    let (mut results, image, image_bytes) = images.exports(runs)?;
    results.extend(images.restores(&image, runs)?);
    for change in [
        OnePackage::Fixture(ONE_PACKAGE),
        OnePackage::FromWheelSet("rich"),
        OnePackage::FromWheelSet("numpy"),
    ] {
        results.extend(images.thin(image_bytes, &change)?);
    }
    Ok(results)
}
