"""The git side of an agent run, via GitPython: checkpoints, worktree branches, diffs, undo,
and the guard that keeps tests unchanged."""

from m2_mcp.workspace.checkpoint import (CHECKPOINT_PREFIX, Checkpoint, close_checkpoint, create_checkpoint,
                                         delete_checkpoint, list_checkpoints, prune_checkpoints, restore_checkpoint)
from m2_mcp.workspace.gitutil import AUTHOR_ENV, NOT_SOURCE, GitError, open_git
from m2_mcp.workspace.guard import TestGuard
from m2_mcp.workspace.snapshot import snapshot_tree
from m2_mcp.workspace.worktree import Workspace

__all__ = ["AUTHOR_ENV", "CHECKPOINT_PREFIX", "NOT_SOURCE", "Checkpoint", "GitError", "TestGuard", "Workspace",
           "close_checkpoint", "create_checkpoint", "delete_checkpoint", "list_checkpoints", "open_git",
           "prune_checkpoints", "restore_checkpoint", "snapshot_tree"]
