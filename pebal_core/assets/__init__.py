"""Files shipped inside the package: the named models of :mod:`pebal_core.model_store`
(``real_espnet_pebal.safetensors``, ``synthetic_model.safetensors``), the named ego-vehicle masks
of :mod:`pebal_core.alarms.ego_mask` (``ego_mask_lostandfound.png``) and ``NOTICE.md``, the
licences of those weights and of the data they and the masks were made from."""
