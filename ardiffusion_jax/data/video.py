"""Videos as uint8 frames: files through PyAV (mp4, avi, ...) and folders of images
(png/jpg, in name order); clip reading with a stride, resize and centre-crop, writing."""

import pathlib

import numpy as np
from PIL import Image

from ardiffusion_jax.errors import DataError


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# A frame whose header claims more pixels than this is refused before it is decoded: a
# PNG can claim 20000 x 20000 in a few bytes (a decompression bomb). 8K video is 33M.
MAX_FRAME_PIXELS = 64 * 1024 * 1024


def frame_files(folder) -> list:
  """The image files of a frame folder, in name order."""
  return sorted(p for p in pathlib.Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def is_video(path) -> bool:
  """A video file, or a folder holding image frames directly."""
  path = pathlib.Path(path)
  if path.is_dir():
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir())
  return path.suffix.lower() in VIDEO_SUFFIXES


def count_frames(path) -> int:
  """Frames in a video file (container metadata, else by decoding) or a frame folder."""
  import av
  path = pathlib.Path(path)
  if path.is_dir():
    return len(frame_files(path))
  try:
    with av.open(str(path)) as container:
      frames = container.streams.video[0].frames
  except (av.error.FFmpegError, IndexError, ValueError) as error:
    raise DataError(f"cannot open video {path}: {error}") from error
  return frames or len(read_video(path))


def read_clip(path, start: int, count: int, stride: int = 1) -> np.ndarray:
  """Frames start, start + stride, ... (`count` of them) of a video file or frame folder
  as uint8 [count, H, W, 3]. Raises DataError when they cannot all be read."""
  path = pathlib.Path(path)
  wanted = start + (count - 1) * stride + 1
  if path.is_dir():
    frames = [read_image(f) for f in frame_files(path)[start:wanted:stride]]
  else:
    frames = list(read_video(path, max_frames=wanted)[start:wanted:stride])
  if len(frames) < count:
    raise DataError(f"{path} has too few frames for {count} at stride {stride} from {start}")
  if len({f.shape for f in frames}) > 1:
    raise DataError(f"the frames of {path} differ in size")
  return np.stack(frames)


def read_image(path) -> np.ndarray:
  """One image file as uint8 [H, W, 3]. Raises DataError for anything that is not a
  readable image of a sane size, whatever the decoder raised."""
  try:
    with Image.open(path) as image:
      if image.width * image.height > MAX_FRAME_PIXELS:
        raise DataError(f"{path} claims {image.width}x{image.height} pixels, more than "
                        f"{MAX_FRAME_PIXELS} (a decompression bomb?)")
      return np.asarray(image.convert("RGB"))
  except DataError:
    raise
  except Exception as error:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
    raise DataError(f"cannot read the frame {path}: {type(error).__name__}: {error}") from error


def read_video(path, max_frames=None) -> np.ndarray:
  """All frames (or the first `max_frames`) of a video file as uint8 [T, H, W, 3].

  Raises DataError for a missing, unreadable or empty file.
  """
  import av
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError(f"video file {path} does not exist")
  frames = []
  try:
    with av.open(str(path)) as container:
      for frame in container.decode(video=0):
        frames.append(frame.to_ndarray(format="rgb24"))
        if max_frames is not None and len(frames) >= max_frames:
          break
  except (av.error.FFmpegError, IndexError, ValueError) as error:
    if not frames:
      raise DataError(f"cannot decode video {path}: {error}") from error
  if not frames:
    raise DataError(f"video {path} has no decodable frames")
  return np.stack(frames)


def resize_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
  """Resizes the short side to `size` (bicubic), then crops the centre square."""
  t, h, w, _ = frames.shape
  scale = size / min(h, w)
  new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
  top, left = (new_h - size) // 2, (new_w - size) // 2
  out = np.empty((t, size, size, 3), np.uint8)
  for i, frame in enumerate(frames):
    image = Image.fromarray(frame)
    if (new_h, new_w) != (h, w):
      image = image.resize((new_w, new_h), Image.BICUBIC)
    out[i] = np.asarray(image)[top:top + size, left:left + size]
  return out


class VideoWriter:
  """Writes uint8 frames [H, W, 3] one at a time into the container the suffix names
  (H.264 mp4 by default, crf 18; yuv420p, so sizes are padded to even). Use it as a
  context manager: closing flushes the encoder and writes the trailer.

  progressive=True (mp4): a fragmented mp4 with one fragment a frame and an encoder
  without lookahead (x264's zerolatency), flushed to disk as each frame comes, so a
  player can show the file while it grows and a process killed mid-way leaves every
  frame but the last written one readable.
  """

  def __init__(self, path, fps: int = 8, codec: str = "libx264", options=None,
               progressive: bool = False):
    import av
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.frames = 0
    self._file = None
    options = dict(options if options is not None else {"crf": "18"})
    if progressive:
      if self.path.suffix != ".mp4":
        raise DataError(f"{self.path}: progressive writing makes a fragmented mp4; name a .mp4")
      options.setdefault("tune", "zerolatency")
      self._file = open(self.path, "wb")
      self._container = av.open(self._file, mode="w", format="mp4", buffer_size=4096,
                                container_options={"movflags": "frag_every_frame+empty_moov"
                                                               "+default_base_moof"})
    else:
      self._container = av.open(str(self.path), mode="w")
    self._stream = self._container.add_stream(codec, rate=fps)
    self._stream.pix_fmt = "yuv420p"
    self._options = options

  def write(self, frame: np.ndarray):
    import av
    frame = np.asarray(frame, np.uint8)
    frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")
    if not self.frames:
      self._stream.width, self._stream.height = frame.shape[1], frame.shape[0]
      self._stream.options = self._options
    for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
      self._container.mux(packet)
    self.frames += 1
    if self._file is not None:
      self._file.flush()

  def close(self):
    if self._container is None:
      return
    for packet in self._stream.encode():
      self._container.mux(packet)
    self._container.close()
    self._container = None
    if self._file is not None:
      self._file.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def write_video(path, frames: np.ndarray, fps: int = 8, codec: str = "libx264",
                options=None) -> pathlib.Path:
  """Writes uint8 frames [T, H, W, 3] with a `VideoWriter`."""
  with VideoWriter(path, fps, codec, options) as writer:
    for frame in frames:
      writer.write(frame)
  return writer.path
