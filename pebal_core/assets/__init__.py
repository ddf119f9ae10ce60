"""Files shipped inside the package: the named models of :mod:`pebal_core.model_store`
(``real_espnet_pebal.safetensors``, ``synthetic_model.safetensors``) and ``NOTICE.md``, the
licences of those weights and of the data they were trained on."""
