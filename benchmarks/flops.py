"""Analytic multiply-accumulate counts of the VGG family (the paper's convention).

VGG-16 at 224x224 is 15.47 GMACs forward (conv 15.35 G + FC 0.12 G), the figure
the issue quotes; a training step is counted as 3x the forward pass (forward,
gradient w.r.t. activations, gradient w.r.t. weights), so 2 * 3 * MACs FLOPs.
"""

# Table 1 of the paper, kernels per block (kept here so this module needs
# neither Keras nor keras_vgg: the GPU machines run it without TensorFlow).
KERNELS = {
    "A": ((3,), (3,), (3, 3), (3, 3), (3, 3)),
    "B": ((3, 3), (3, 3), (3, 3), (3, 3), (3, 3)),
    "C": ((3, 3), (3, 3), (3, 3, 1), (3, 3, 1), (3, 3, 1)),
    "D": ((3, 3), (3, 3), (3, 3, 3), (3, 3, 3), (3, 3, 3)),
    "E": ((3, 3), (3, 3), (3, 3, 3, 3), (3, 3, 3, 3), (3, 3, 3, 3)),
}
WIDTHS = (64, 128, 256, 512, 512)


def forward_macs(config="D", image_size=224, widths=WIDTHS, fc_units=4096,
                 classes=1000, include_top=True):
    """Multiply-accumulates of one forward pass for one image."""
    macs, channels, size = 0, 3, image_size
    for kernels, filters in zip(KERNELS[config], widths):
        for k in kernels:
            macs += size * size * k * k * channels * filters
            channels = filters
        size //= 2
    if include_top:
        flat = size * size * channels
        macs += flat * fc_units + fc_units * fc_units + fc_units * classes
    return macs


def train_flops_per_image(**kwargs):
    """FLOPs of one training step per image: 2 FLOPs per MAC, 3x forward."""
    return 2 * 3 * forward_macs(**kwargs)


def forward_flops_per_image(**kwargs):
    return 2 * forward_macs(**kwargs)


# Dense bf16 tensor-core peaks from NVIDIA's data sheets (TFLOP/s, no sparsity).
GPU_SPEC_BF16_TFLOPS = {"H100 SXM": 989.4, "H100 NVL": 835.0, "H100 PCIe": 756.0,
                        "H100": 989.4, "H200": 989.4, "A100": 312.0, "L4": 121.0}
