"""One job: one file in -> one file out. Shared by `naiup refine` and the daemon's worker.

CONTRACT (filled in by the engine-core issue):
    run_job(src: Path, preset: Preset, engine: ImageEngine, config: Config,
            progress: Callable[[float, str], None] | None = None) -> JobResult
        reads src (read_image), refuses outputs over config.output.max_output_megapixels before model
        work, calls engine.process, publishes beside src atomically (never overwrites; " (2)" on
        collision), carries NAI text chunks, adds `naiup` provenance + A1111 `parameters` chunks.
    is_naiup_output(path: Path) -> bool     # provenance chunk present (so the daemon never re-queues)

    class ImageEngine(Protocol):
        def process(self, image: Image.Image, meta: ImageMetadata, preset: Preset, *,
                    progress: Callable[[float, str], None] | None = None) -> EngineResult
    EngineResult(image: Image.Image, seed: int | None, parameters: dict, timings: dict[str, float])
    JobResult(src: Path, output: Path, seed: int | None, timings: dict[str, float])
"""
