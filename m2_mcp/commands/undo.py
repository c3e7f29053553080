"""`m2-mcp undo`: put the working tree back as it was before the last agent run."""

HELP = "restore the working tree (and index) from the checkpoint taken before an agent run"


def add_arguments(parser) -> None:
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
    print(f"restored {done['restored']}; removed {len(done['removed'])} file(s) the run created; "
          f"previous state saved as {done['safety_checkpoint']}")
    return 0
