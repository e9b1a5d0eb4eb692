"""The remote policies' encodings and observation/action mappings (no sockets; see test_remote_serve.py
and test_remote_peers.py for real processes)."""
from __future__ import annotations

import msgpack
import numpy as np
import pytest

from lamp_bench.harness.policy import Observation, Task
from lamp_bench.harness.remote import RemoteProtocolError, codec, mapping
from lamp_bench.harness.remote.cameras import CameraGeometry
from lamp_bench.harness.remote.inputs import BadRequest, to_observation
from lamp_bench.harness.policy import PolicyNeeds

HOME_QUAT_XYZW = np.array([0.9995, 0.0, -0.0286, -0.01])  # near LIBERO's home pose (w slightly negative)


def test_openpi_arrays_round_trip_with_binary_keys():
    obs = {"observation/image": np.arange(12, dtype=np.uint8).reshape(2, 2, 3), "state": np.float32(1.5),
           "observation/state": np.linspace(0, 1, 8)}
    raw = codec.openpi_pack(obs)
    plain = msgpack.unpackb(raw, raw=False)  # how a peer without hooks sees the frame
    assert set(plain["observation/image"]) == {b"__ndarray__", b"data", b"dtype", b"shape"}
    assert plain["state"][b"__npgeneric__"] is True
    back = codec.openpi_unpack(raw)
    np.testing.assert_array_equal(back["observation/image"], obs["observation/image"])
    np.testing.assert_array_equal(back["observation/state"], obs["observation/state"])
    assert back["state"] == np.float32(1.5) and back["state"].dtype == np.float32


def test_vla_eval_images_travel_as_images_and_arrays_with_string_keys():
    image = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    states = np.arange(8, dtype=np.float64)
    for image_format in ("png", "raw"):
        raw = codec.pack_envelope("observation", {"images": {"agentview": image}, "states": states}, 3, image_format)
        plain = msgpack.unpackb(raw, raw=False)
        assert set(plain) == {"type", "payload", "seq", "timestamp"}
        assert plain["payload"]["images"]["agentview"]["__image__"] is True
        assert plain["payload"]["images"]["agentview"]["format"] == image_format
        assert plain["payload"]["states"]["__ndarray__"] is True
        message = codec.unpack_envelope(raw)
        assert (message.type, message.seq) == ("observation", 3)
        np.testing.assert_array_equal(message.payload["images"]["agentview"], image)  # png is lossless
        np.testing.assert_array_equal(message.payload["states"], states)


@pytest.mark.parametrize("frame", [
    b"\xc1\xc1garbage",  # not msgpack
    msgpack.packb([1, 2, 3]),  # not a map
    msgpack.packb({"type": "observation", "payload": {}, "seq": 1}),  # no timestamp
    msgpack.packb({"type": "teleport", "payload": {}, "seq": 1, "timestamp": 0.0}),  # unknown type
    msgpack.packb({"type": "action", "payload": {"actions": {"__ndarray__": True, "data": b"\0" * 3,
                                                              "dtype": "<f4", "shape": [7]}},
                   "seq": 1, "timestamp": 0.0}),  # 3 bytes for 7 floats
    msgpack.packb({"type": "action", "payload": {"actions": {"__ndarray__": True, "data": b"\0" * 8,
                                                              "dtype": "|O", "shape": [1]}},
                   "seq": 1, "timestamp": 0.0}),  # object dtype: never decoded
    msgpack.packb({"type": "observation", "payload": {"im": {"__image__": True, "format": "png",
                                                             "data": b"notpng", "shape": [2, 2, 3]}},
                   "seq": 1, "timestamp": 0.0}),
])
def test_vla_eval_garbage_is_a_protocol_error(frame):
    with pytest.raises(RemoteProtocolError):
        codec.unpack_envelope(frame)


def test_openpi_refuses_object_arrays_and_short_buffers():
    bad = msgpack.packb({"a": {b"__ndarray__": True, b"data": b"\0" * 4, b"dtype": "<f8", b"shape": [1]}})
    with pytest.raises(RemoteProtocolError):
        codec.openpi_unpack(bad)
    with pytest.raises(RemoteProtocolError):
        codec.openpi_unpack("a text frame")
    with pytest.raises(TypeError):
        codec.openpi_pack({"x": np.array([object()])})


def test_axis_angle_conventions_differ_by_sign_at_the_home_pose():
    q = HOME_QUAT_XYZW / np.linalg.norm(HOME_QUAT_XYZW)
    robosuite = mapping.axis_angle_from_quat(q, "robosuite")
    antipodal = mapping.axis_angle_from_quat(q, "antipodal")
    assert robosuite[0] > 3.0 and robosuite[2] < 0  # openpi: ~(+3.14, 0, -0.09)
    assert antipodal[0] < -3.0 and antipodal[2] > 0  # vla-eval: ~(-3.14, 0, 0.09)
    for rotvec in (robosuite, antipodal):  # both describe the same rotation
        back = mapping.quat_from_axis_angle(rotvec)
        assert abs(abs(np.dot(back, q)) - 1) < 1e-9


def test_requests_follow_each_reference_benchmark():
    rng = np.random.default_rng(1)
    obs = Observation("put the bowl on the plate",
                      images={r: rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for r in ("third_person", "wrist")},
                      intrinsics={"third_person": np.array([[-300.0, 0, 127.5], [0, 300, 127.5], [0, 0, 1]])},
                      proprio=np.concatenate([[0.1, 0.2, 0.3], HOME_QUAT_XYZW, [0.04, -0.04]]).astype(np.float32))
    task = Task("libero_spatial", 0, "t", obs.instruction, dataset="libero_spatial")
    openpi = mapping.build_request(obs, "libero", mapping.WireOptions.for_protocol("openpi"), task)
    assert openpi["observation/image"].shape == (224, 224, 3) and openpi["observation/state"].dtype == np.float64
    assert openpi["prompt"] == obs.instruction and openpi["observation/state"][3] > 3.0
    np.testing.assert_allclose(openpi[mapping.EXTRA_INTRINSICS]["third_person"][0, 0], -300 * 224 / 256)
    vla = mapping.build_request(obs, "libero", mapping.WireOptions.for_protocol("vla-eval"), task)
    assert set(vla["images"]) == {"agentview", "wrist"} and vla["images"]["agentview"].shape == (256, 256, 3)
    np.testing.assert_array_equal(vla["images"]["agentview"], obs.images["third_person"])
    assert vla["task_description"] == obs.instruction and vla["states"][3] < -3.0


def test_replies_map_to_lamp_actions():
    openpi = mapping.WireOptions.for_protocol("openpi")
    vla = mapping.WireOptions.for_protocol("vla-eval")
    row = np.array([0.5, -2.0, 0, 0, 0, 0, -0.3])
    np.testing.assert_allclose(mapping.to_lamp_action(row, "libero", openpi), [0.5, -1, 0, 0, 0, 0, -0.3])  # clipped
    np.testing.assert_allclose(mapping.to_lamp_action(row, "libero", vla)[-1], -1.0)  # binarised
    bridge = np.array([0.01, 0, -0.05, 0.1, 0, 0, 1.0])  # metres, radians, gripper 1 = open
    np.testing.assert_allclose(mapping.to_lamp_action(bridge, "widowx", vla), [0.2, 0, -1, 0.2, 0, 0, -1])
    assert mapping.openpi_actions({"actions": np.zeros((10, 7))}).shape == (10, 7)
    for bad in ({"actions": np.zeros((10, 6))}, {"no": 1}, {"actions": [np.nan] * 7}, [1, 2]):
        with pytest.raises(RemoteProtocolError):
            mapping.openpi_actions(bad)
    for bad in ({"actions": np.zeros((1, 7))}, {"actions": np.zeros(6)}, {}):
        with pytest.raises(RemoteProtocolError):
            mapping.vla_eval_action(bad)


def test_server_inputs_rebuild_the_observation_and_refuse_bad_requests():
    needs = PolicyNeeds(cameras=("third_person",), image_size=64, proprio=True)
    k = np.array([[200.0, 0, 111.5], [0, 200, 111.5], [0, 0, 1]])
    geometry = CameraGeometry(intrinsics={"third_person": k}, sizes={"third_person": 224}, source="test")
    proprio = np.concatenate([[0.1, 0.2, 0.3], HOME_QUAT_XYZW / np.linalg.norm(HOME_QUAT_XYZW), [0.04, -0.04]])
    state = np.concatenate([proprio[:3], mapping.axis_angle_from_quat(proprio[3:7], "robosuite"), proprio[7:]])
    request = {"observation/image": np.zeros((224, 224, 3), np.uint8), "observation/wrist_image": np.zeros((224, 224, 3), np.uint8),
               "observation/state": state, "prompt": "go"}
    obs = to_observation(request, "openpi", needs, geometry, require_intrinsics=True)
    assert obs.images["third_person"].shape == (64, 64, 3) and obs.instruction == "go"
    np.testing.assert_allclose(obs.intrinsics["third_person"], mapping.scale_intrinsics(k, 224, 64))
    q = obs.proprio[3:7]
    assert abs(abs(np.dot(q, proprio[3:7])) - 1) < 1e-6
    with pytest.raises(BadRequest):
        to_observation({**request, "observation/state": np.zeros(5)}, "openpi", needs, geometry, True)
    with pytest.raises(BadRequest):
        to_observation({**request, "observation/image": np.zeros((4, 4), np.float32)}, "openpi", needs, geometry, True)
    with pytest.raises(BadRequest):
        to_observation(request, "openpi", needs, CameraGeometry(), require_intrinsics=True)


def test_widowx_request_and_its_inverse():
    quat_xyzw = np.array([0.0, 0.0, np.sin(0.3), np.cos(0.3)])
    fingers = 0.026  # half open
    obs = Observation("put carrot on plate", images={"third_person": np.zeros((224, 224, 3), np.uint8)},
                      proprio=np.concatenate([[0.1, 0.2, 0.3], quat_xyzw, [fingers, fingers]]).astype(np.float32))
    request = mapping.build_request(obs, "widowx", mapping.WireOptions.for_protocol("vla-eval", image_size=224,
                                                                                    send_extras=False))
    assert set(request["images"]) == {"primary"} and request["states"].dtype == np.float32
    np.testing.assert_allclose(request["states"][3:7], [quat_xyzw[3], 0, 0, quat_xyzw[2]], atol=1e-6)  # wxyz
    np.testing.assert_allclose(request["states"][7], 0.5, atol=1e-6)
    needs = PolicyNeeds(cameras=("third_person",), image_size=224, proprio=True)
    back = to_observation(request, "vla-eval", needs, CameraGeometry(), require_intrinsics=False)
    np.testing.assert_allclose(back.proprio, obs.proprio, atol=1e-6)
