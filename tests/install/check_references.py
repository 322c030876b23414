#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Every reference in the repository leads somewhere a clone holds.

Usage: check_references.py [SOURCE_ROOT]

Reads the tracked files (git ls-files, plus untracked files git does not ignore; without git,
every file below SOURCE_ROOT but build directories) and prints FILE:LINE: reason for:

- a citation of the old product contract, style guide or platform notes, which are not in
  the repository (their names as words, "pitfall N" of the platform notes, a section sign
  that follows no standard's name): the facts are in doc/*.md now;
- in comments (C, shell, meson, Python, config files) and in documents (*.md, *.scd): a
  path shaped like a repository path (it starts with one of the repository's top-level
  directories, e.g. doc/x.md or factory/y.c) that does not exist, and a Markdown link to a
  file that does not exist (relative to the document).

Placeholders (cmd_<verb>.c, ${x}) and globs (tests/data/manifests/bad/*.csv; at least one
match) are understood. Exit 1 when anything is found, 0 otherwise.
"""

import glob
import os
import re
import subprocess
import sys

# Spelled in pieces so that this file does not cite what it looks for.
OLD_DOCS = ["SP" + "EC", "STY" + "LE", "PLAT" + "FORM"]
CITATION = re.compile(r"\b(" + "|".join(OLD_DOCS) + r")\b(\.md)?|\b[Pp]itfalls? \d+")
SECTION = "\u00a7"
# A section sign is fine after a standard's name: "RFC 8017 <sign>9.2", "MQTT 3.1.1 <sign>3.1".
STANDARD_BEFORE = re.compile(r"(RFC ?\d+|PKCS ?#? ?\d*|MQTT|OASIS|X\.509|ISO|FIPS|NIST|TCG|"
                             + SECTION + r")[^;:]{0,24}$")

# Never read: data, not prose (corpora, recorded benchmark results, journals under test).
SKIP_DIRS = ("tests/data/", "tests/fuzz/corpus/", "bench/results/")

C_EXT = (".c", ".h")
DOC_EXT = (".md", ".scd")
HASH_EXT = (".sh", ".py", ".build", ".txt", ".cnf", ".conf", ".rules", ".service", ".table",
            ".supp", ".bash", ".postinst", ".postrm")
HASH_NAMES = ("meson_options.txt", "rules", "run", ".gitignore", ".clang-format")

# A path ends before a placeholder (<verb>, ${x}, %s) and never continues an absolute or
# relative path ("/usr/share/doc/...", "../udev/README.md", "build/tests/...").
PATH_CHARS = r"[A-Za-z0-9_.@+*-]"
MD_LINK = re.compile(r"\]\(([^)\s]+)\)")


def repo_files(root):
    try:
        out = subprocess.run(["git", "-C", root, "ls-files", "--cached", "--others",
                              "--exclude-standard", "-z"], check=True,
                             capture_output=True).stdout
        files = sorted(set(p for p in out.decode().split("\0") if p))
        # A build directory git does not ignore holds test logs that quote what was found.
        builds = tuple(f.split("meson-private/", 1)[0] for f in files if "meson-private/" in f)
        return [f for f in files
                if os.path.isfile(os.path.join(root, f)) and not f.startswith(builds)]
    except (OSError, subprocess.CalledProcessError):
        pass
    files = []
    for d, subdirs, names in os.walk(root):
        if "meson-private" in subdirs or "build.ninja" in names:
            subdirs[:] = []
            continue
        subdirs[:] = sorted(s for s in subdirs if s != ".git")
        for n in sorted(names):
            files.append(os.path.relpath(os.path.join(d, n), root))
    return files


def comment_lines_c(text):
    """(line number, comment text) of every C comment, strings and characters skipped."""
    out = []
    i, n, line = 0, len(text), 1
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append((line, text[i + 2:j]))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j
            for k, part in enumerate(text[i + 2:j].split("\n")):
                out.append((line + k, part))
            line += text.count("\n", i, j)
            i = j + 2
        elif c in "\"'":
            i += 1
            while i < n and text[i] != c and text[i] != "\n":
                i += 2 if text[i] == "\\" else 1
            i += 1
        else:
            i += 1
    return out


def comment_lines_hash(text):
    """(line number, text after a '#' that starts a comment) for shell, meson, Python, configs."""
    out = []
    for number, line in enumerate(text.split("\n"), 1):
        quote = None
        i = 0
        while i < len(line):
            c = line[i]
            if quote:
                if c == "\\" and quote == '"':
                    i += 1  # the escaped character
                elif c == quote:
                    quote = None
            elif c in "\"'":
                quote = c
            elif c == "#" and (i == 0 or line[i - 1] in " \t"):
                out.append((number, line[i + 1:]))
                break
            i += 1
    return out


def all_lines(text):
    return list(enumerate(text.split("\n"), 1))


def kind(path):
    base = os.path.basename(path)
    if path.endswith(C_EXT):
        return "c"
    if path.endswith(DOC_EXT):
        return "doc"
    if path.endswith(HASH_EXT) or base in HASH_NAMES or base.startswith("README"):
        return "doc" if base.startswith("README") else "hash"
    return "other"


def exists(root, rel):
    if any(ch in rel for ch in "*?["):
        return bool(glob.glob(os.path.join(root, rel)))
    return os.path.exists(os.path.join(root, rel))


def check_paths(root, path, number, text, path_re, problems):
    for m in path_re.finditer(text):
        rel = m.group(1)
        after = text[m.end():m.end() + 1]
        if after in ("<", "{", "$", "%") or "..." in rel:
            continue  # a placeholder or an elision, not a file
        if path.endswith(".scd") and ("*" in rel or "/_" in rel):
            continue  # scdoc's *bold* and _underline_ around a placeholder
        rel = rel.rstrip(".")
        if not exists(root, rel):
            problems.append(f"{path}:{number}: {rel}: no such file in the repository")


def check_links(root, path, number, text, problems):
    for m in MD_LINK.finditer(text):
        target = m.group(1)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        target = target.split("#", 1)[0]
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
        if resolved.startswith("..") or not os.path.exists(os.path.join(root, resolved)):
            problems.append(f"{path}:{number}: link {target}: no such file in the repository")


def check_citations(path, number, text, problems):
    cited = False
    for m in CITATION.finditer(text):
        cited = True
        problems.append(f"{path}:{number}: cites {m.group(0)}, which is not in the repository "
                        "(point at a doc/ page or a source file)")
    for m in re.finditer(SECTION, text) if not cited else ():
        if not STANDARD_BEFORE.search(text[max(0, m.start() - 40):m.start()]):
            problems.append(f"{path}:{number}: a section sign that names no document "
                            "(point at a doc/ page or a source file)")


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", ".."))
    files = [f for f in repo_files(root) if not f.startswith(SKIP_DIRS)]
    tops = sorted(set(f.split("/", 1)[0] for f in files if "/" in f))
    path_re = re.compile(r"(?<![A-Za-z0-9_./~$@-])((?:" + "|".join(re.escape(t) for t in tops)
                         + r")/(?:" + PATH_CHARS + r"+/?)*)")
    problems = []
    for path in files:
        try:
            with open(os.path.join(root, path), encoding="utf-8") as f:
                text = f.read()
        except (UnicodeDecodeError, OSError):
            continue  # binary
        k = kind(path)
        for number, line in all_lines(text):
            check_citations(path, number, line, problems)
        if k == "c":
            prose = comment_lines_c(text)
        elif k == "hash":
            prose = comment_lines_hash(text)
        elif k == "doc":
            prose = all_lines(text)
        else:
            prose = []
        for number, line in prose:
            check_paths(root, path, number, line, path_re, problems)
            if path.endswith(".md"):
                check_links(root, path, number, line, problems)
    for p in problems:
        print(p)
    print(f"check_references: {len(files)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
