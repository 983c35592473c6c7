"""Pretraining audio from Debian packages, FSDD and the synthetic generator: 16 kHz mono FLAC clips + manifest.

Run: ``python -m hear_embed.train.gather_audio --out runs/tiny2/audio`` (network: the Debian archive only).
Each package is fetched with ``apt-get download`` (no root, nothing installed), unpacked with ``dpkg-deb -x``
into a temporary folder, and its audio files are cut into clips of at most ``--clip-seconds`` and written under
``OUT/clips/<category>/<source>/``. Written per source, so an interrupted run resumes where it stopped:

- ``manifest.csv``: path (relative to OUT), source, license (from the package's ``copyright`` file), category
  (speech / music / sounds), duration_s, selected (1 when in the balanced training list);
- ``train_files.txt``: the balanced selection, one path per line (a ``data.sources`` manifest for training);
- ``summary.md`` / ``summary.json``: hours per source and category; ``skipped.txt``: unreadable files and why.

Drum-kit sample collections and sonic-pi's drum samples are reserved for evaluation: :data:`DENIED_PACKAGES`
and :data:`DENIED_SAMPLE_PATTERNS` are checked before anything is downloaded or converted.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import io
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hear_embed.atomic_files import write_atomically, write_json_atomically, write_text_atomically
from hear_embed.audio_io import AUDIO_EXTENSIONS, AudioReadError, read_audio

SAMPLE_RATE = 16000
CATEGORIES = ("speech", "music", "sounds")
MANIFEST_COLUMNS = ("path", "source", "license", "category", "duration_s")

# Reserved for evaluation (percussion tasks): never downloaded, never converted.
DENIED_PACKAGES = ("hydrogen-drumkits*", "hydrogen-data", "avldrums.lv2*", "drumgizmo*", "drumkv1*")
# sonic-pi-samples file names that are drums or percussion (kicks, snares, hats, loops, tabla, electronic kit).
DENIED_SAMPLE_PATTERNS = ("drum_*", "bd_*", "sn_*", "hat_*", "ride_*", "perc_*", "tabla_*", "loop_*", "elec_*",
                          "*_perc*", "arovane_beat*", "*kick*", "*snare*", "*cymbal*", "*_tom*")


@dataclass(frozen=True)
class PackageSource:
    """A Debian package and which of its files to take: ``rules`` are (glob on the path inside the package,
    category), first match wins; files matching no rule are ignored."""

    package: str
    rules: tuple[tuple[str, str], ...]


ASTERISK = (("*/sounds/*", "speech"),)
PACKAGE_SOURCES = (
    *(PackageSource(f"asterisk-core-sounds-{language}-wav", ASTERISK) for language in ("en", "fr", "es", "ru", "it")),
    PackageSource("asterisk-prompt-it-menardi-wav", ASTERISK),  # asterisk-prompt-es-co / -fr-armelle: raw GSM only
    PackageSource("fillets-ng-data", (("*/fillets-ng/music/*", "music"), ("*/sound/share/*", "sounds"),
                                      ("*/fillets-ng/sound/*", "speech"))),
    PackageSource("fillets-ng-data-cs", (("*/fillets-ng/sound/*", "speech"),)),
    PackageSource("fillets-ng-data-nl", (("*/fillets-ng/sound/*", "speech"),)),
    PackageSource("hyperrogue-music", (("*/hyperrogue/music/*", "music"), ("*/hyperrogue/sounds/*", "sounds"))),
    PackageSource("planetblupi-music-ogg", (("*/music/*", "music"),)),
    PackageSource("wesnoth-1.16-music", (("*/music/*", "music"),)),
    PackageSource("sonic-pi-samples", (("*/sonic-pi/samples/*", "sounds"),)),
    PackageSource("lomiri-sounds", (("*/ringtones/*", "music"), ("*/sounds/*", "sounds"))),
    PackageSource("gnome-audio", (("*/sounds/*", "sounds"),)),
    PackageSource("sound-icons", (("*/sounds/*", "sounds"),)),
    PackageSource("sound-theme-freedesktop", (("*/sounds/*", "sounds"),)),
)
# flite (English, 5 voices) reads these sentences; its binary and voices come from the flite / libflite1 packages.
FLITE_PACKAGES = ("flite", "libflite1")
FLITE_VOICES = ("kal", "kal16", "awb", "rms", "slt")
SENTENCES = (
    "The quick brown fox jumps over the lazy dog.",
    "Please leave your message after the tone, and we will call you back as soon as possible.",
    "Turn left at the next junction, then continue straight for two kilometres.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "Would you like a cup of tea, or perhaps some coffee with milk?",
    "Seven hundred and forty two passengers boarded the train at nine fifteen.",
    "Warning: the battery level is low. Connect the charger now.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "Open the window, it is getting rather warm in here.",
    "Our meeting has been moved to Thursday afternoon at half past three.",
    "How much wood would a woodchuck chuck if a woodchuck could chuck wood?",
    "The museum closes at six o'clock; the last admission is at five thirty.",
    "Stop! Do not cross the road until the light turns green.",
    "I can't believe it's already the end of November.",
    "Press one for sales, two for support, or stay on the line for an operator.",
    "Rain is expected in the north, with sunny spells in the south later today.",
)
FSDD_TAKES = range(10, 50)  # takes 0-9 build the evaluation mini-suite
FSDD_LICENSE = "CC-BY-SA-4.0 (Free Spoken Digit Dataset)"
SYNTHETIC_LICENSE = "generated by hear_embed.train.synthesize (this project's license)"


def denied_package(package: str) -> bool:
    return any(fnmatch.fnmatch(package, pattern) for pattern in DENIED_PACKAGES)


def denied_sample(file_name: str) -> bool:
    return any(fnmatch.fnmatch(file_name.lower(), pattern) for pattern in DENIED_SAMPLE_PATTERNS)


def check_allowed(package: str) -> None:
    """Raise ``ValueError`` for a package reserved for evaluation."""
    if denied_package(package):
        raise ValueError(f"package {package!r} is reserved for evaluation (drum kits); it is on DENIED_PACKAGES")


LICENSE_MENTIONS = (  # (pattern in free-form copyright text, short name), for files not in the DEP-5 format
    (r"GNU\s+(Lesser|Library)\s+General\s+Public\s+License|\bLGPL", "LGPL"),
    (r"GNU\s+General\s+Public\s+License|\bGPL-?\d", "GPL"),
    (r"Creative\s+Commons|\bCC-BY", "Creative Commons"),
    (r"public\s+domain", "public domain"),
    (r"\bBSD\b", "BSD"),
    (r"\bMIT\b|\bExpat\b", "MIT"),
)


def package_license(root: Path, package: str) -> str:
    """Licenses of ``usr/share/doc/<package>/copyright``: the distinct short names of its ``License:`` fields
    (machine-readable DEP-5 format), else the licenses its free text mentions ("mentions GPL; public domain"),
    else "see copyright file"; "unknown (no copyright file)" when absent."""
    copyright_file = root / "usr/share/doc" / package / "copyright"
    if not copyright_file.is_file():
        return "unknown (no copyright file)"
    text = copyright_file.read_text(errors="replace")
    fields = re.findall(r"^License:[ \t]*(\S.*)$", text, flags=re.MULTILINE)
    names = list(dict.fromkeys(name.strip() for name in fields if len(name.split()) <= 4))
    if names:
        return "; ".join(names)
    mentioned = [name for pattern, name in LICENSE_MENTIONS if re.search(pattern, text, flags=re.IGNORECASE)]
    return "mentions " + "; ".join(mentioned) if mentioned else "see copyright file"


def category_of(relative_path: str, source: PackageSource) -> str | None:
    for pattern, category in source.rules:
        if fnmatch.fnmatch(relative_path, pattern):
            return category
    return None


def split_clips(audio: np.ndarray, clip_seconds: float, min_seconds: float = 0.2) -> list[np.ndarray]:
    """(samples,) -> pieces of at most ``clip_seconds``; a last piece shorter than ``min_seconds`` is dropped,
    and so is a clip that is silent (peak below 1e-4)."""
    size = int(clip_seconds * SAMPLE_RATE)
    pieces = [audio[start: start + size] for start in range(0, len(audio), size)]
    return [piece for piece in pieces if len(piece) >= min_seconds * SAMPLE_RATE and np.abs(piece).max() >= 1e-4]


def write_flac(path: Path, audio: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, lambda out: sf.write(out, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16"))


def convert_files(files: list[tuple[Path, str]], out: Path, source: str, license_name: str, clip_seconds: float,
                  skipped: list[str], name_of=lambda path: path.stem) -> list[dict]:
    """Decode (file, category) pairs to 16 kHz mono FLAC clips under ``out/clips/<category>/<source>/``;
    unreadable files are appended to ``skipped`` as "file: reason". -> manifest rows."""
    rows = []
    for file, category in files:
        try:
            audio = read_audio(file, SAMPLE_RATE)
        except AudioReadError as error:
            skipped.append(f"{source}: {file.name}: {error}")
            continue
        for index, clip in enumerate(split_clips(audio, clip_seconds)):
            relative = Path("clips") / category / source / f"{name_of(file)}_{index:03d}.flac"
            write_flac(out / relative, clip)
            rows.append({"path": relative.as_posix(), "source": source, "license": license_name, "category": category,
                         "duration_s": f"{len(clip) / SAMPLE_RATE:.3f}"})
    return rows


def package_files(root: Path, source: PackageSource) -> list[tuple[Path, str]]:
    """Audio files of an unpacked package with their categories; sonic-pi's drum samples left out."""
    chosen = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        category = category_of(path.relative_to(root).as_posix(), source)
        if category and not (source.package == "sonic-pi-samples" and denied_sample(path.name)):
            chosen.append((path, category))
    return chosen


def flat_name(root: Path):
    """File name for a clip: the path inside the package with '/' -> '__' (unique within a source)."""
    return lambda path: path.relative_to(root).with_suffix("").as_posix().replace("/", "__")


def download(packages: tuple[str, ...], debs: Path) -> list[Path]:
    """``apt-get download`` into ``debs`` (kept, so a rerun downloads nothing) -> the .deb files."""
    for package in packages:
        check_allowed(package)
    debs.mkdir(parents=True, exist_ok=True)
    missing = [package for package in packages if not list(debs.glob(f"{package}_*.deb"))]
    if missing:
        result = subprocess.run(["apt-get", "download", *missing], cwd=debs, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"apt-get download {' '.join(missing)} failed: {result.stderr.strip()[-500:]}")
    return [sorted(debs.glob(f"{package}_*.deb"))[-1] for package in packages]


def gather_package(source: PackageSource, out: Path, debs: Path, clip_seconds: float, skipped: list[str]) -> list[dict]:
    check_allowed(source.package)
    (deb,) = download((source.package,), debs)
    with tempfile.TemporaryDirectory(prefix="gather_") as folder:
        root = Path(folder)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        problems: list[str] = []
        rows = convert_files(package_files(root, source), out, source.package, package_license(root, source.package),
                             clip_seconds, problems, name_of=flat_name(root))
        skipped += [problem.replace(f"{root}/", f"{deb.name}:") for problem in problems]  # not the temporary folder
        return rows


def gather_flite(out: Path, debs: Path, clip_seconds: float, skipped: list[str]) -> list[dict]:
    """Every sentence read by every flite voice (speech, English)."""
    with tempfile.TemporaryDirectory(prefix="gather_") as folder:
        root = Path(folder)
        for deb in download(FLITE_PACKAGES, debs):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        environment = {**os.environ, "LD_LIBRARY_PATH": str(root / "usr/lib/x86_64-linux-gnu")}
        files = []
        for voice in FLITE_VOICES:
            for index, sentence in enumerate(SENTENCES):
                wav = root / f"flite_{voice}_{index:02d}.wav"
                result = subprocess.run([str(root / "usr/bin/flite"), "-voice", voice, "-t", sentence, "-o", str(wav)],
                                        env=environment, capture_output=True, text=True)
                if result.returncode != 0:
                    skipped.append(f"flite: voice {voice} sentence {index}: {result.stderr.strip()[-200:]}")
                    continue
                files.append((wav, "speech"))
        return convert_files(files, out, "flite", package_license(root, "flite"), clip_seconds, skipped)


def gather_fsdd(recordings: Path, out: Path, clip_seconds: float, skipped: list[str]) -> list[dict]:
    files = [(path, "speech") for path in sorted(recordings.glob("*.wav"))
             if path.stem.rsplit("_", 1)[-1].isdigit() and int(path.stem.rsplit("_", 1)[-1]) in FSDD_TAKES]
    return convert_files(files, out, "fsdd", FSDD_LICENSE, clip_seconds, skipped)


def gather_synthetic(count: int, seed: int, out: Path) -> list[dict]:
    from hear_embed.train.synthesize import scene

    rng, rows = np.random.default_rng(seed), []
    for index in range(count):
        clip = scene(rng)
        relative = Path("clips/sounds/synthetic") / f"synthetic_{index:05d}.flac"
        write_flac(out / relative, clip)
        rows.append({"path": relative.as_posix(), "source": "synthetic", "license": SYNTHETIC_LICENSE,
                     "category": "sounds", "duration_s": f"{len(clip) / SAMPLE_RATE:.3f}"})
    return rows


def balance(rows: list[dict], hours_per_category: float | None = None) -> set[str]:
    """Paths selected so every category gets the same hours: ``hours_per_category``, or the smallest category's
    total. Within a category the sources take turns (each in a fixed hash order), so no source dominates."""
    totals = {category: sum(float(row["duration_s"]) for row in rows if row["category"] == category)
              for category in CATEGORIES}
    present = [total for total in totals.values() if total > 0]
    if not present:
        return set()
    budget = 3600.0 * hours_per_category if hours_per_category else min(present)
    selected = set()
    for category in CATEGORIES:
        queues: dict[str, list[dict]] = {}
        for row in sorted(rows, key=lambda row: hashlib.sha1(row["path"].encode()).hexdigest()):
            if row["category"] == category:
                queues.setdefault(row["source"], []).append(row)
        used = 0.0
        while used < budget and any(queues.values()):
            for queue in queues.values():
                if queue and used < budget:
                    row = queue.pop(0)
                    selected.add(row["path"])
                    used += float(row["duration_s"])
    return selected


def hours_table(rows: list[dict], selected: set[str]) -> tuple[list[dict], str]:
    """Per (source, category): files, hours and selected hours -> (json rows, markdown table with totals)."""
    groups: dict[tuple[str, str], dict] = {}
    for row in rows:
        entry = groups.setdefault((row["source"], row["category"]), {"source": row["source"], "category": row["category"],
                                                                     "license": row["license"], "clips": 0, "hours": 0.0,
                                                                     "selected_hours": 0.0})
        entry["clips"] += 1
        entry["hours"] += float(row["duration_s"]) / 3600
        entry["selected_hours"] += float(row["duration_s"]) / 3600 if row["path"] in selected else 0.0
    table = sorted(groups.values(), key=lambda entry: (entry["category"], entry["source"]))
    lines = ["| category | source | clips | hours | selected hours | license |", "|---|---|---:|---:|---:|---|"]
    lines += [f"| {e['category']} | {e['source']} | {e['clips']} | {e['hours']:.2f} | {e['selected_hours']:.2f} | {e['license']} |"
              for e in table]
    for category in CATEGORIES:
        entries = [e for e in table if e["category"] == category]
        lines.append(f"| **{category}** | all | {sum(e['clips'] for e in entries)} | {sum(e['hours'] for e in entries):.2f} "
                     f"| {sum(e['selected_hours'] for e in entries):.2f} | |")
    return table, "\n".join(lines) + "\n"


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def rows_csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def gather(out: Path, *, sources: tuple[PackageSource, ...] = PACKAGE_SOURCES, fsdd: Path | None = None,
           flite: bool = True, synthetic_count: int = 2400, synthetic_seed: int = 7, clip_seconds: float = 10.0,
           hours_per_category: float | None = None, debs: Path | None = None) -> dict:
    """Gather everything into ``out``; each finished source is recorded in ``out/sources/<name>.csv`` and not redone.
    -> the summary (also written to summary.json / summary.md)."""
    for source in sources:
        check_allowed(source.package)
    debs = debs or out / "debs"
    jobs = [(source.package, lambda skipped, source=source: gather_package(source, out, debs, clip_seconds, skipped))
            for source in sources]
    if flite:
        jobs.append(("flite", lambda skipped: gather_flite(out, debs, clip_seconds, skipped)))
    if fsdd:
        jobs.append(("fsdd", lambda skipped: gather_fsdd(fsdd, out, clip_seconds, skipped)))
    if synthetic_count:
        jobs.append(("synthetic", lambda skipped: gather_synthetic(synthetic_count, synthetic_seed, out)))
    rows, skipped = [], []
    for name, job in jobs:
        done = out / "sources" / f"{name}.csv"
        if done.is_file():
            rows += read_rows(done)
            skipped += (out / "sources" / f"{name}.skipped.txt").read_text().splitlines()
            continue
        print(f"gathering {name} ...", flush=True)
        source_skipped: list[str] = []
        source_rows = job(source_skipped)
        done.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(out / "sources" / f"{name}.skipped.txt", "".join(line + "\n" for line in source_skipped))
        write_text_atomically(done, rows_csv(source_rows, MANIFEST_COLUMNS))
        rows += source_rows
        skipped += source_skipped
    selected = balance(rows, hours_per_category)
    for row in rows:
        row["selected"] = "1" if row["path"] in selected else "0"
    write_text_atomically(out / "manifest.csv", rows_csv(rows, MANIFEST_COLUMNS + ("selected",)))
    write_text_atomically(out / "train_files.txt", "".join(row["path"] + "\n" for row in rows if row["path"] in selected))
    write_text_atomically(out / "skipped.txt", "".join(line + "\n" for line in skipped))
    table, markdown = hours_table(rows, selected)
    summary = {"sources": table, "skipped": len(skipped), "clips": len(rows), "selected_clips": len(selected)}
    write_json_atomically(out / "summary.json", summary)
    write_text_atomically(out / "summary.md", markdown + f"\n{len(skipped)} unreadable files skipped (skipped.txt).\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hear_embed.train.gather_audio", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumable)")
    parser.add_argument("--fsdd", type=Path, default=Path("../shared/data/fsdd/recordings"),
                        help="FSDD recordings folder (takes 10-49 are used)")
    parser.add_argument("--no-flite", action="store_true", help="skip speech synthesis with flite")
    parser.add_argument("--synthetic-count", type=int, default=2400)
    parser.add_argument("--clip-seconds", type=float, default=10.0)
    parser.add_argument("--hours-per-category", type=float, help="default: the smallest category's total")
    parser.add_argument("--debs", type=Path, help="where downloaded .deb files are kept (default OUT/debs)")
    args = parser.parse_args(argv)
    summary = gather(args.out, fsdd=args.fsdd if args.fsdd.is_dir() else None, flite=not args.no_flite,
                     synthetic_count=args.synthetic_count, clip_seconds=args.clip_seconds,
                     hours_per_category=args.hours_per_category, debs=args.debs)
    print((args.out / "summary.md").read_text())
    print(json.dumps({key: summary[key] for key in ("clips", "selected_clips", "skipped")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
