"""`m2-mcp undo`: put the working tree back as it was before the last agent run."""

HELP = "restore the working tree (and index) from the checkpoint taken before an agent run"

EPILOG = """Restores files byte for byte with their permission bits, the index (conflict
stages included) and the small git-ignored files the checkpoint copied. Deletes only
files the run created and that are unchanged since; submodules and nested repositories
are left alone. The current state is checkpointed first, so an undo can be undone.
Checkpoints: refs/m2-mcp/checkpoints/ plus .git/m2-mcp/checkpoints/ (ignored files,
modes, index; never in a ref). The newest M2_MCP_CHECKPOINTS_KEEP (20) are kept,
those older than M2_MCP_CHECKPOINTS_MAX_DAYS (30) dropped, the newest always kept."""


def add_arguments(parser) -> None:
    import argparse

    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("checkpoint", nargs="?", help="checkpoint ref or sha (default: the newest run checkpoint)")
    parser.add_argument("--repo", help="repository root (env M2_REPO; default: current directory)")
    parser.add_argument("--list", action="store_true", help="list checkpoints, newest first")


def run(args) -> int:
    from m2_mcp.repo import Repo
    from m2_mcp.workspace import list_checkpoints, restore_checkpoint

    repo = Repo.open(args.repo)
    if args.list:
        rows = list_checkpoints(repo.root)
        if not rows:
            print("no checkpoints")
        for row in rows:
            print(f"{row['ref'].removeprefix('refs/m2-mcp/checkpoints/')}  {row['date']}  {row['label']}")
        return 0
    done = restore_checkpoint(repo.root, args.checkpoint)
    notes = [f"removed {len(done['removed'])} file(s) the run created"]
    if done["left"]:
        notes.append(f"left {len(done['left'])} file(s) the checkpoint did not have (not created by the run, "
                     f"or changed since; e.g. {done['left'][0]})")
    if done["skipped"]:
        notes.append(f"could not restore {len(done['skipped'])} file(s) whose place is taken by a directory, "
                     f"a symlink or a nested repository (e.g. {done['skipped'][0]})")
    if done["lost"]:
        notes.append(f"{len(done['lost'])} git-ignored file(s) the run deleted were too large to keep in the "
                     f"checkpoint and are not back (e.g. {done['lost'][0]})")
    safety = done["safety_checkpoint"]
    saved = f"the state before this undo is saved: 'm2-mcp undo {safety.removeprefix('refs/m2-mcp/checkpoints/')}' " \
        "brings it back" if safety else "the working tree already matched it"
    print(f"restored {done['restored']}; {'; '.join(notes)}; {saved}")
    return 1 if done["skipped"] or done["lost"] else 0
