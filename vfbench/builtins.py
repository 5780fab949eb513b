"""Lazy declarations of the built-in registry entries (nothing heavy is imported here).

Each section belongs to one subsystem; the target module registers the real object with the
same name when it is imported.
"""

from vfbench.registry import DATASETS, EXTRACTORS, GENERATORS, METRICS

# -- datasets ---------------------------------------------------------------------------------
DATASETS.add_lazy("shapes", "vfbench.data.shapes:ShapesDataset",
                  description="built-in procedural clips: content (shape x colour x texture) x motion")
DATASETS.add_lazy("taichi", "vfbench.data.folders:TaiChiDataset",
                  description="TaiChi-HD from a local folder (train/ test/), 16 frames at stride 4")
DATASETS.add_lazy("ucf101", "vfbench.data.folders:UCF101Dataset",
                  description="UCF-101 class folders + ucfTrainTestlist, 101 class labels")
DATASETS.add_lazy("sky", "vfbench.data.folders:SkyDataset",
                  description="Sky Time-lapse sky_train/ sky_test/ frame folders")
DATASETS.add_lazy("weizmann", "vfbench.data.folders:WeizmannDataset",
                  description="Weizmann actions (person x action labels) from a local folder")
DATASETS.add_lazy("folder", "vfbench.data.folders:FolderDataset",
                  description="any folder of videos (mp4/avi) or frame folders (png/jpg)")

# -- generators -------------------------------------------------------------------------------
GENERATORS.add_lazy("videofusion", "vfbench.generators.videofusion:VideoFusion",
                    description="decomposed diffusion: shared base noise + per-frame residual (Luo et al. 2023)")
GENERATORS.add_lazy("vdm", "vfbench.generators.vdm:VDM",
                    description="video diffusion with a factorized space-time U-Net (Ho et al. 2022)")
GENERATORS.add_lazy("vidm", "vfbench.generators.vidm:VIDM",
                    description="content DPM + autoregressive motion DPM with PosGN (Mei & Patel 2023)")

# -- feature extractors and metrics -----------------------------------------------------------
# (declared by the metrics subsystem below)

# metrics subsystem: statistics/scores (metrics/protocols.py registers the MetricSpec objects)
EXTRACTORS.add_lazy("c3d-ucf101", "vfbench.metrics.c3d:C3DExtractor",
                    description="C3D UCF-101 class posteriors for the video IS (user-supplied weights)")
for _name, _hib, _desc in [
    ("fvd2048_16f", False, "FVD, I3D (TF-Hub reference), 2048 vs 2048 16x128x128 clips"),
    ("kvd2048_16f", False, "KVD (cubic-kernel unbiased MMD^2, raw), I3D, 2048 vs 2048"),
    ("fvd256_16f", False, "FVD, I3D, 256 vs 256 16x128x128 clips (quick; not comparable to fvd2048)"),
    ("kvd256_16f", False, "KVD, I3D, 256 vs 256 (quick)"),
    ("is2048_ucf_tganv2", True, "video IS, C3D UCF-101, TGANv2 protocol: bilinear 112, 10 rounds of 2048"),
    ("is10k_ucf_tgan", True, "video IS, C3D UCF-101, TGAN v1 protocol: cubic 128 + crop 112, 10,000 samples"),
    ("fvd_shapes256", False, "FVD with the built-in shapes-net features, 256 vs 256 shapes clips"),
    ("kvd_shapes256", False, "KVD with the built-in shapes-net features, 256 vs 256 shapes clips"),
    ("is_shapes256", True, "IS of shapes-net content posteriors (120 classes), 256 clips"),
    ("disentangle_shapes", True, "VideoFusion content/motion control: chance-corrected label agreement under shared base / residual noise"),
]:
    METRICS.add_lazy(_name, f"vfbench.metrics.protocols:{_name}", description=_desc, higher_is_better=_hib)
EXTRACTORS.add_lazy("i3d", "vfbench.metrics.i3d_extractor:I3DExtractor",
                    description="I3D Kinetics-400 logits (TF-Hub FVD/KVD network), presets reference | stylegan-v | tats")
EXTRACTORS.add_lazy("shapes-net", "vfbench.metrics.shapes_net:ShapesNetExtractor",
                    description="built-in 3D CNN on the shapes factors (features, content/motion posteriors)")
