"""MMEngine's ``CheckpointHook``, saving in an order that a crash at any moment cannot break."""
import os
from pathlib import Path

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook

from diffengine.constants import LAST_CHECKPOINT
from diffengine.file_writes import flush_rename, flush_to_disk, partial_path, write_text_whole
from diffengine.registry import HOOKS


@HOOKS.register_module()
class CrashSafeCheckpointHook(CheckpointHook):
    """``CheckpointHook`` (same options) whose saves always leave the newest whole checkpoint on disk.

    MMEngine deletes the oldest kept checkpoint before it writes the new one, and writes the new
    one in place: a crash or a full disk during the write leaves a truncated ``iter_N.pth``, and
    with ``max_keep_ckpts=1`` no whole checkpoint at all. This hook writes ``.iter_N.partial.pth``,
    flushes it to the disk, renames it to ``iter_N.pth`` (atomic on one filesystem), renames a new ``last_checkpoint``
    into place, and only then deletes the checkpoints that fell out of the kept ones. Checkpoints
    that go to a remote backend (``out_dir`` on S3, ...) are saved the way MMEngine saves them.
    """

    def _save_checkpoint_with_step(self, runner, step: int, meta: dict) -> None:
        if not isinstance(self.file_backend, LocalBackend):
            super()._save_checkpoint_with_step(runner, step, meta)
            return
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info("keep_ckpt_ids", list(self.keep_ckpt_ids))
        name = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, name)
        runner.message_hub.update_info("last_ckpt", self.last_ckpt)
        partial = partial_path(Path(self.out_dir) / name)  # beside it: filename_tmpl may name a subfolder
        try:
            runner.save_checkpoint(self.out_dir, str(partial.relative_to(self.out_dir)), self.file_client_args,
                                   save_optimizer=self.save_optimizer,
                                   save_param_scheduler=self.save_param_scheduler, meta=meta,
                                   by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        except BaseException:  # a full disk, say: the run ends, without a partial file left behind
            partial.unlink(missing_ok=True)
            raise
        if not is_main_process():
            return
        flush_to_disk(partial)
        os.replace(partial, self.last_ckpt)
        flush_rename(self.last_ckpt)
        write_text_whole(Path(runner.work_dir) / LAST_CHECKPOINT, self.last_ckpt)
        for old in outdated:
            Path(self.out_dir, self.filename_tmpl.format(old)).unlink(missing_ok=True)
