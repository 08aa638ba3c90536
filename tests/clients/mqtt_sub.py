"""An MQTT subscriber for tests/mqtt.rs (paho-mqtt, a client that is not ours).

    mqtt_sub.py HOST PORT TOPIC CLIENT_ID CLEAN

Subscribes to TOPIC at QoS 1 and prints one JSON line per message ({"topic", "payload",
"retain", "qos"}), and {"ready": true} after each SUBACK. CLEAN=0 keeps a persistent
session, so a broker that restarts with persistence queues what arrives meanwhile; the
client reconnects on its own. Ends when its standard input closes (the test ends).
"""
import json
import sys
import threading

import paho.mqtt.client as mqtt

host, port, topic, client_id, clean = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5] == "1"


def say(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def on_connect(client, _userdata, _flags, reason, _props):
    if reason == 0:
        client.subscribe(topic, qos=1)


def on_subscribe(_client, _userdata, _mid, _reasons, _props):
    say({"ready": True})


def on_message(_client, _userdata, msg):
    say({"topic": msg.topic, "payload": msg.payload.decode("utf-8", "replace"),
         "retain": bool(msg.retain), "qos": msg.qos})


client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean)
client.on_connect = on_connect
client.on_subscribe = on_subscribe
client.on_message = on_message
client.reconnect_delay_set(min_delay=0.05, max_delay=0.3)
client.connect_async(host, port, keepalive=10)
client.loop_start()
sys.stdin.read()  # until the test closes our standard input (or dies)
client.disconnect()
client.loop_stop()
